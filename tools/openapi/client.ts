// A tiny typed client over the types that openapi-typescript generates from sessiond's
// /openapi.json (tools/openapi/check.sh writes them to generated/sessiond.d.ts, then runs tsc on
// this file). It compiles only if the document describes what a client needs: request bodies,
// parameters, success bodies, and problem+json errors with their codes.
import type { components, operations } from "./generated/sessiond";

type Schemas = components["schemas"];
type Responses = components["responses"];

/** Every error body: the `code` is the contract. */
export type Problem = Schemas["Problem"];
export type ErrorCode = Problem["code"];

/** The JSON body of `status` of an operation (success or problem). */
type Body<Op extends keyof operations, Status extends keyof operations[Op]["responses"]> =
  operations[Op]["responses"][Status] extends { content: infer C }
    ? C[keyof C]
    : never;

export type Result<T> = { ok: true; value: T } | { ok: false; problem: Problem };

export class Client {
  constructor(
    private readonly base: string,
    private readonly apiKey: string,
    private readonly fetchFn: typeof fetch = fetch,
  ) {}

  private async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<Result<T>> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.apiKey}` };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.fetchFn(`${this.base}${path}`, init);
    if (response.status === 204) {
      return { ok: true, value: undefined as T };
    }
    const json: unknown = await response.json();
    if (response.headers.get("content-type")?.startsWith("application/problem+json")) {
      return { ok: false, problem: json as Problem };
    }
    return { ok: true, value: json as T };
  }

  createSession(body: Schemas["CreateSessionRequest"]): Promise<Result<Body<"create_session", 201>>> {
    return this.call("POST", "/v1/sessions", body);
  }

  validate(body: Schemas["ValidateRequest"]): Promise<Result<Body<"validate", 200>>> {
    return this.call("POST", "/v1/sessions/validate", body);
  }

  refresh(body: Schemas["RefreshRequest"]): Promise<Result<Body<"refresh_tokens", 200>>> {
    return this.call("POST", "/v1/tokens/refresh", body);
  }

  session(id: operations["get_session"]["parameters"]["path"]["id"]): Promise<Result<Body<"get_session", 200>>> {
    return this.call("GET", `/v1/sessions/${encodeURIComponent(id)}`);
  }

  revoke(id: string, body?: Schemas["RevokeRequest"]): Promise<Result<undefined>> {
    return this.call("POST", `/v1/sessions/${encodeURIComponent(id)}/revoke`, body);
  }

  userSessions(
    userId: string,
    query: operations["user_sessions"]["parameters"]["query"] = {},
  ): Promise<Result<Body<"user_sessions", 200>>> {
    const q = query?.tenant === undefined ? "" : `?tenant=${encodeURIComponent(query.tenant)}`;
    return this.call("GET", `/v1/users/${encodeURIComponent(userId)}/sessions${q}`);
  }

  claim(body: Schemas["ClaimRequest"]): Promise<Result<Body<"claim", 201>>> {
    return this.call("POST", "/v1/claims", body);
  }
}

// What the types must say, checked by the compiler.
export async function example(client: Client): Promise<string | undefined> {
  const created = await client.createSession({ user_id: "alice", kind: "cookie", ip: "203.0.113.7" });
  if (!created.ok) {
    const code: ErrorCode = created.problem.code;
    return code;
  }
  const session: Schemas["SessionView"] = created.value.session;
  const cookie: string | undefined = created.value.cookie;
  if (cookie === undefined) return undefined;
  const validated = await client.validate({ cookie, csrf_token: created.value.csrf_token ?? null, require_csrf: true });
  if (validated.ok) {
    const deadline: string = validated.value.deadline;
    const kind: "cookie" | "tokens" | "browser" = validated.value.session.kind;
    return `${session.id} ${deadline} ${kind}`;
  }
  // A refused credential carries one of the 401 or 403 codes.
  const refused: Responses["CredentialRefused"]["content"]["application/problem+json"]["code"] =
    "session_revoked";
  return refused;
}

// @ts-expect-error: a kind the API does not have.
export const badKind: Schemas["CreateSessionRequest"] = { user_id: "a", kind: "password" };
// @ts-expect-error: validate needs a credential.
export const noCredential: Schemas["ValidateRequest"] = { require_csrf: true };
// @ts-expect-error: a code that does not exist.
export const badCode: ErrorCode = "im_a_teapot";
// @ts-expect-error: a claim is a token or an id with its expiry.
export const badClaim: Schemas["ClaimRequest"] = { id: "x" };
