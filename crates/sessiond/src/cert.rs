//! Certificate expiry: a client certificate's `notAfter` is a credential deadline (docs/DESIGN.md §6.4).
//!
//! The server feeds each mTLS connection's verified chain through [`chain_expiry`]; a relay that
//! terminates TLS itself hands the PEM or DER it received to [`certificate_expiry`] and passes the
//! result to [`ExtraDeadline::certificate`](crate::ExtraDeadline::certificate) when it watches
//! the session. A chain is only as good as its weakest link, so both return the *earliest*
//! `notAfter`: an intermediate that expires before the leaf ends the credential then.
//!
//! Parsing only: nothing here verifies signatures or trust. Verification is the TLS stack's job
//! (or the relay's); this module turns an already-trusted chain into a deadline.

use der::Decode as _;
use x509_cert::Certificate;

use crate::Timestamp;

/// Why a byte string gave no expiry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input is neither PEM text (`-----BEGIN …`) nor a DER `SEQUENCE`.
    #[error("not a PEM or DER certificate")]
    NotPemOrDer,
    /// PEM text with no `CERTIFICATE` block (e.g. only a private key), or an empty chain.
    #[error("no certificate found")]
    NoCertificate,
    /// A PEM block is malformed (bad armour or base64).
    #[error("malformed PEM block (certificate {index} of the input)")]
    Pem {
        /// Zero-based position of the block among the input's PEM blocks.
        index: usize,
        /// The PEM decoder's error (as `der`'s error kind `Pem`).
        #[source]
        source: der::Error,
    },
    /// A certificate's DER does not parse as an X.509 certificate.
    #[error("unparseable X.509 certificate (certificate {index} of the input)")]
    Unparseable {
        /// Zero-based position of the certificate in the input.
        index: usize,
        /// The DER decoder's error.
        #[source]
        source: der::Error,
    },
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";

/// The earliest `notAfter` of the certificates in `pem_or_der`: a PEM bundle (blocks labelled
/// other than `CERTIFICATE`, such as a private key, are skipped) or one DER certificate.
///
/// # Errors
/// [`CertError::NotPemOrDer`] when the input is neither; [`CertError::NoCertificate`] for PEM
/// without a certificate block; [`CertError::Pem`] or [`CertError::Unparseable`] naming the
/// first bad certificate.
pub fn certificate_expiry(pem_or_der: &[u8]) -> Result<Timestamp, CertError> {
    if let Some(text) = pem_text(pem_or_der) {
        let mut earliest: Option<Timestamp> = None;
        for (index, block) in pem_blocks(text).enumerate() {
            let (label, der) =
                der::pem::decode_vec(block.as_bytes()).map_err(|e| CertError::Pem {
                    index,
                    source: e.into(),
                })?;
            if label != "CERTIFICATE" {
                continue;
            }
            let at = der_expiry(&der, index)?;
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
        earliest.ok_or(CertError::NoCertificate)
    } else if pem_or_der.first() == Some(&0x30) {
        der_expiry(pem_or_der, 0)
    } else {
        Err(CertError::NotPemOrDer)
    }
}

/// The earliest `notAfter` of a chain of DER certificates, as a TLS stack presents it (leaf
/// first; the order does not matter).
///
/// # Errors
/// [`CertError::NoCertificate`] for an empty chain; [`CertError::Unparseable`] naming the first
/// certificate that does not parse.
pub fn chain_expiry<'a, I>(chain: I) -> Result<Timestamp, CertError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut earliest: Option<Timestamp> = None;
    for (index, der) in chain.into_iter().enumerate() {
        let at = der_expiry(der, index)?;
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.ok_or(CertError::NoCertificate)
}

fn der_expiry(der: &[u8], index: usize) -> Result<Timestamp, CertError> {
    let cert =
        Certificate::from_der(der).map_err(|source| CertError::Unparseable { index, source })?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    let millis = i64::try_from(not_after.as_millis()).unwrap_or(i64::MAX);
    Ok(Timestamp::from_unix_millis(millis))
}

/// The input as text when it looks like PEM: UTF-8 with at least one `-----BEGIN ` (explanatory
/// text before and between blocks is allowed, as RFC 7468 §5.2 permits).
fn pem_text(input: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(input).ok()?;
    text.contains(BEGIN).then_some(text)
}

/// Each `-----BEGIN …-----` … `-----END …-----` block, armour included; text between blocks
/// (comments some tools write) is ignored. An unterminated block is yielded as is, so the
/// decoder reports it.
fn pem_blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(BEGIN)?;
        let from_start = rest.get(start..)?;
        let block_len = from_start
            .find(END)
            .and_then(|end| {
                let after_end = from_start.get(end + END.len()..)?;
                let close = after_end.find("-----")?;
                Some(end + END.len() + close + "-----".len())
            })
            .unwrap_or(from_start.len());
        let block = from_start.get(..block_len)?;
        rest = from_start.get(block_len..).unwrap_or("");
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use time::OffsetDateTime;

    struct Issued {
        cert: rcgen::Certificate,
        key: KeyPair,
        params: CertificateParams,
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn params(name: &str, not_after: i64, ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
        p.not_before = at(1_700_000_000);
        p.not_after = at(not_after);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    fn self_signed(name: &str, not_after: i64) -> Issued {
        let key = KeyPair::generate().unwrap();
        let params = params(name, not_after, true);
        let cert = params.self_signed(&key).unwrap();
        Issued { cert, key, params }
    }

    fn signed(name: &str, not_after: i64, ca: bool, issuer: &Issued) -> Issued {
        let key = KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&issuer.params, &issuer.key);
        let params = params(name, not_after, ca);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued { cert, key, params }
    }

    const LEAF: i64 = 1_900_000_000;
    const INTERMEDIATE: i64 = 1_850_000_000;
    const ROOT: i64 = 2_000_000_000;

    fn chain() -> (Issued, Issued, Issued) {
        let root = self_signed("root", ROOT);
        let intermediate = signed("intermediate", INTERMEDIATE, true, &root);
        let leaf = signed("leaf.example", LEAF, false, &intermediate);
        (leaf, intermediate, root)
    }

    #[test]
    fn single_der_and_pem_give_not_after() {
        let root = self_signed("root", ROOT);
        let want = Timestamp::from_unix_seconds(ROOT);
        assert_eq!(certificate_expiry(root.cert.der()).unwrap(), want);
        assert_eq!(
            certificate_expiry(root.cert.pem().as_bytes()).unwrap(),
            want
        );
    }

    #[test]
    fn bundle_gives_the_earliest_not_after_even_when_the_intermediate_expires_first() {
        let (leaf, intermediate, root) = chain();
        let bundle = format!(
            "# leaf\n{}\n{}{}",
            leaf.cert.pem(),
            intermediate.cert.pem(),
            root.cert.pem()
        );
        let want = Timestamp::from_unix_seconds(INTERMEDIATE);
        assert_eq!(certificate_expiry(bundle.as_bytes()).unwrap(), want);
        let ders = [leaf.cert.der(), intermediate.cert.der(), root.cert.der()];
        assert_eq!(chain_expiry(ders.iter().map(|d| d.as_ref())).unwrap(), want);
    }

    #[test]
    fn non_certificate_pem_blocks_are_skipped() {
        let root = self_signed("root", ROOT);
        let bundle = format!("{}{}", root.key.serialize_pem(), root.cert.pem());
        assert_eq!(
            certificate_expiry(bundle.as_bytes()).unwrap(),
            Timestamp::from_unix_seconds(ROOT)
        );
    }

    #[test]
    fn errors_are_precise() {
        let root = self_signed("root", ROOT);
        let key_only = root.key.serialize_pem();
        let mut truncated = root.cert.der().to_vec();
        truncated.truncate(40);
        let garbage_pem = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let not_x509 = format!(
            "{}{}",
            root.cert.pem(),
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
        );
        let cases: [(&str, &[u8], &str); 7] = [
            ("empty", b"", "NotPemOrDer"),
            ("text", b"hello", "NotPemOrDer"),
            ("key only", key_only.as_bytes(), "NoCertificate"),
            ("bad base64", garbage_pem.as_bytes(), "Pem { index: 0"),
            ("truncated DER", &truncated, "Unparseable { index: 0"),
            (
                "second not X.509",
                not_x509.as_bytes(),
                "Unparseable { index: 1",
            ),
            ("whitespace", b"  \n", "NotPemOrDer"),
        ];
        for (name, input, want) in cases {
            let got = format!("{:?}", certificate_expiry(input).unwrap_err());
            assert!(got.starts_with(want), "{name}: {got}");
        }
        assert!(matches!(
            chain_expiry(std::iter::empty()),
            Err(CertError::NoCertificate)
        ));
    }
}
