//! Comparing what a client sent with a configured secret, in constant time.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use subtle::ConstantTimeEq;

use crate::config::Secret;

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether `given` is `secret`. Plain secrets are compared as digests, so neither the content
/// nor the length shows in the time taken. Argon2 is slow by design (tens of milliseconds):
/// callers run it off the async threads and remember successes.
pub(crate) fn verify(secret: &Secret, given: &str) -> bool {
    match secret {
        Secret::Plain(plain) => sha256(plain.as_bytes())
            .ct_eq(&sha256(given.as_bytes()))
            .into(),
        Secret::Sha256(digest) => sha256(given.as_bytes()).ct_eq(digest).into(),
        Secret::Argon2(phc) => PasswordHash::new(phc).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(given.as_bytes(), &hash)
                .is_ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_secret;

    #[test]
    fn plain_sha256_and_argon2() {
        let plain = parse_secret("testpass").unwrap();
        assert!(verify(&plain, "testpass"));
        assert!(!verify(&plain, "testpas"));
        let hashed = parse_secret("sha256:E9JJ8stBJ7QM+nV4ZoUCeHk/gU3tPFh/5YieiJp6n2w=").unwrap();
        assert!(verify(&hashed, "testpass"));
        assert!(!verify(&hashed, "other"));
        // echo -n testpass | argon2 saltsalt -id -e
        let argon = parse_secret(
            "argon2:$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$6DlZ2SZ8wgr78bIgqStn1a2pGrFKUu3GocrmkBm/dHQ",
        )
        .unwrap();
        assert!(verify(&argon, "testpass"));
        assert!(!verify(&argon, "testpasss"));
    }
}
