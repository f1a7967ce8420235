//! HMAC (RFC 2104) over the SHA family, and constant-time comparison.
//!
//! HMAC is a few lines over a hash function; writing it here avoids another dependency for
//! what receivers and generic-hmac providers need.

use sha2::Digest;
use subtle::ConstantTimeEq;

fn hmac<D: Digest>(block_size: usize, key: &[u8], msg: &[u8]) -> Vec<u8> {
    // Keys longer than a block are hashed first; shorter keys are zero-padded.
    let mut k = if key.len() > block_size {
        D::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(block_size, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = D::new();
    inner.update(&ipad);
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = D::new();
    outer.update(&opad);
    outer.update(inner);
    outer.finalize().to_vec()
}

pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::<sha1::Sha1>(64, key, msg)
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::<sha2::Sha256>(64, key, msg)
}

pub fn hmac_sha512(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::<sha2::Sha512>(128, key, msg)
}

/// Compares secrets without leaking, through timing, how long a prefix matched.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Checks a `<algo>=<hex>` signature header (`sha1`, `sha256` or `sha512`) over `body`.
pub fn verify_signature_header(header: &str, key: &[u8], body: &[u8]) -> bool {
    let Some((algo, hex_sig)) = header.trim().split_once('=') else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let expected = match algo.trim().to_ascii_lowercase().as_str() {
        "sha1" => hmac_sha1(key, body),
        "sha256" => hmac_sha256(key, body),
        "sha512" => hmac_sha512(key, body),
        _ => return false,
    };
    ct_eq(&expected, &sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_and_rfc2202_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha512(b"Jefe", b"what do ya want for nothing?")),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // RFC 2202 test case 2.
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        let key = [0xaau8; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signature_headers() {
        let sig = format!("sha256={}", hex::encode(hmac_sha256(b"k", b"body")));
        assert!(verify_signature_header(&sig, b"k", b"body"));
        assert!(!verify_signature_header(&sig, b"k", b"bodY"));
        assert!(!verify_signature_header("sha256=zz", b"k", b"body"));
        assert!(!verify_signature_header("md5=00", b"k", b"body"));
        assert!(!verify_signature_header("", b"k", b"body"));
    }
}
