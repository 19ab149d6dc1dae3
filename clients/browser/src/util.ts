/** base64url without padding (RFC 4648 §5). */
export const b64url = (b: Uint8Array): string =>
  btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/**
 * Reads a `text/event-stream` body and calls `cb(event, data)` for every dispatched event.
 * Comments (`:` lines), `id:` and `retry:` are ignored. Resolves when the stream ends.
 */
export async function readSse(
  body: ReadableStream<Uint8Array>,
  cb: (event: string, data: string) => void,
): Promise<void> {
  const rd = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let ev = "";
  let data: string | undefined;
  for (;;) {
    const { done, value } = await rd.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, "");
      buf = buf.slice(i + 1);
      if (!line) {
        if (data != null) cb(ev || "message", data);
        ev = "";
        data = undefined;
      } else if (line[0] != ":") {
        const c = line.indexOf(":");
        const f = c < 0 ? line : line.slice(0, c);
        const v = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
        if (f == "event") ev = v;
        else if (f == "data") data = data == null ? v : data + "\n" + v;
      }
    }
  }
}

/** An error answer of sessiond: `status` and the problem JSON's `code` when there is one. */
export async function httpError(r: Response, what: string): Promise<Error & { status: number; code?: string }> {
  let code: string | undefined;
  try {
    code = (await r.json()).code;
  } catch {
    /* not JSON */
  }
  return Object.assign(new Error(`sessiond: ${what} answered ${r.status}${code ? " " + code : ""}`), {
    status: r.status,
    code,
  });
}
