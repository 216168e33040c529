//! Sealed-value and wrapped-key framing: XChaCha20-Poly1305 with a random
//! nonce, the header authenticated as associated data. Pure: no database,
//! no files.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::SealError;

/// First bytes of a sealed value (format version 1).
pub const SEALED_MAGIC: &[u8; 3] = b"SB1";
/// First bytes of a key wrapped by a [`super::LocalKek`] (format version 1).
pub const WRAPPED_MAGIC: &[u8; 3] = b"SW1";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SEALED_HEADER_LEN: usize = SEALED_MAGIC.len() + 8;

/// Bytes a sealed value adds to its plaintext: header, nonce and tag.
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Length of a key wrapped by a [`super::LocalKek`].
pub const WRAPPED_LEN: usize = WRAPPED_MAGIC.len() + NONCE_LEN + 32 + TAG_LEN;

/// `header | nonce | ciphertext | tag`; associated data `header | aad`.
/// Built in place so no copy of the plaintext is left behind.
fn encrypt(key: &[u8; 32], header: &[u8], plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let body = header.len() + NONCE_LEN;
    let mut out = Zeroizing::new(Vec::with_capacity(body + plaintext.len() + TAG_LEN));
    out.extend_from_slice(header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let ad = associated_data(header, aad);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &ad, &mut out[body..])
        .ok()?;
    out.extend_from_slice(&tag);
    Some(std::mem::take(&mut *out))
}

/// Opens what [`encrypt`] made with a header of `header_len` bytes.
fn decrypt(
    key: &[u8; 32],
    header_len: usize,
    sealed: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < header_len + NONCE_LEN + TAG_LEN {
        return None;
    }
    let (header, rest) = sealed.split_at(header_len);
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let ad = associated_data(header, aad);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &ad,
            &mut buf,
            Tag::from_slice(tag),
        )
        .ok()?;
    Some(buf)
}

fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + aad.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(aad);
    ad
}

/// Seals `plaintext` under DEK `dek_id` for the context `aad`.
pub(super) fn seal_value(
    dek_id: i64,
    key: &[u8; 32],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let id = u64::try_from(dek_id).map_err(|_| SealError::UnknownDek { dek_id })?;
    let mut header = [0u8; SEALED_HEADER_LEN];
    header[..3].copy_from_slice(SEALED_MAGIC);
    header[3..].copy_from_slice(&id.to_be_bytes());
    encrypt(key, &header, plaintext, aad).ok_or(SealError::Malformed("value too large to seal"))
}

/// The DEK id in a sealed value's header (the header is authenticated when
/// the value is opened).
pub(super) fn sealed_dek_id(sealed: &[u8]) -> Result<i64, SealError> {
    if sealed.len() < SEALED_OVERHEAD {
        return Err(SealError::Malformed("too short"));
    }
    if &sealed[..3] != SEALED_MAGIC {
        return Err(SealError::Malformed("unknown format (expected SB1)"));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&sealed[3..SEALED_HEADER_LEN]);
    i64::try_from(u64::from_be_bytes(id))
        .map_err(|_| SealError::Malformed("data key id out of range"))
}

/// The 24-byte nonce of a sealed value (for the nonce-uniqueness tests).
#[cfg(test)]
pub(super) fn sealed_nonce(sealed: &[u8]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&sealed[SEALED_HEADER_LEN..SEALED_HEADER_LEN + NONCE_LEN]);
    n
}

/// Opens a sealed value with the key of the DEK its header names.
pub(super) fn open_value(
    key: &[u8; 32],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let dek_id = sealed_dek_id(sealed)?;
    decrypt(key, SEALED_HEADER_LEN, sealed, aad).ok_or(SealError::Authentication { dek_id })
}

/// Wraps a 32-byte key under `kek` for the context `aad`.
pub(super) fn wrap_key(kek: &[u8; 32], plaintext_key: &[u8; 32], aad: &[u8]) -> Option<Vec<u8>> {
    encrypt(kek, WRAPPED_MAGIC, plaintext_key, aad)
}

/// Unwraps what [`wrap_key`] made; `None` for any mismatch.
pub(super) fn unwrap_key(
    kek: &[u8; 32],
    wrapped: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    if wrapped.len() != WRAPPED_LEN || &wrapped[..3] != WRAPPED_MAGIC {
        return None;
    }
    let plain = decrypt(kek, WRAPPED_MAGIC.len(), wrapped, aad)?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&plain);
    Some(key)
}

/// Associated data binding a wrapped DEK to its KEK and row.
pub(super) fn dek_aad(kek_id: &str, dek_id: i64, category: &str, period: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(64);
    a.extend_from_slice(b"switchboard/seal/dek\0");
    a.extend_from_slice(kek_id.as_bytes());
    a.push(0);
    a.extend_from_slice(&dek_id.to_be_bytes());
    a.extend_from_slice(category.as_bytes());
    a.push(0);
    a.extend_from_slice(period.as_bytes());
    a
}

/// Associated data binding a wrapped `seal_meta` key to its KEK and name.
pub(super) fn meta_aad(kek_id: &str, key: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(48);
    a.extend_from_slice(b"switchboard/seal/meta\0");
    a.extend_from_slice(kek_id.as_bytes());
    a.push(0);
    a.extend_from_slice(key.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_layout_is_magic_id_nonce_ciphertext_tag() {
        let key = [7u8; 32];
        let s = seal_value(0x0102_0304_0506_0708, &key, b"hello", b"ctx").unwrap();
        assert_eq!(&s[..3], b"SB1");
        assert_eq!(&s[3..11], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(s.len(), 5 + SEALED_OVERHEAD);
        assert_eq!(sealed_dek_id(&s).unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(&open_value(&key, &s, b"ctx").unwrap()[..], b"hello");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = [1u8; 32];
        let s = seal_value(1, &key, b"", b"").unwrap();
        assert_eq!(s.len(), SEALED_OVERHEAD);
        assert!(open_value(&key, &s, b"").unwrap().is_empty());
    }

    #[test]
    fn wrapped_layout_and_context() {
        let kek = [9u8; 32];
        let dek = [3u8; 32];
        let w = wrap_key(&kek, &dek, b"a").unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(&w[..3], b"SW1");
        assert_eq!(*unwrap_key(&kek, &w, b"a").unwrap(), dek);
        assert!(unwrap_key(&kek, &w, b"b").is_none());
        assert!(unwrap_key(&[8u8; 32], &w, b"a").is_none());
        assert!(unwrap_key(&kek, &w[..WRAPPED_LEN - 1], b"a").is_none());
    }

    #[test]
    fn negative_dek_id_in_header_is_malformed() {
        let mut s = seal_value(1, &[0u8; 32], b"x", b"").unwrap();
        s[3] = 0x80;
        assert!(matches!(sealed_dek_id(&s), Err(SealError::Malformed(_))));
    }
}
