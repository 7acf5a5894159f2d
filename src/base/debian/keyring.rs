//! The OpenPGP public keys an `InRelease` must be signed by. By default Debian's own archive
//! signing keys, embedded in kiln (from debian-archive-keyring 2023.3+deb12u2, public data), so
//! a fresh kiln trusts exactly what apt on bookworm or trixie trusts; a site with its own
//! signed mirror replaces them with a keyring file.

use std::io::{BufReader, Read as _};
use std::path::Path;

use pgp::composed::{Deserializable as _, SignedPublicKey, SignedPublicSubKey};
use pgp::types::KeyDetails as _;

use super::error::DebianError;

/// Debian's archive keys: bookworm's and trixie's (the suites kiln makes bases from), each as
/// the automatic (main archive), security-automatic and stable (point release) key.
const DEBIAN_KEYS: [(&str, &[u8]); 6] = [
    (
        "debian-archive-bookworm-automatic",
        include_bytes!("keys/debian-archive-bookworm-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-security-automatic",
        include_bytes!("keys/debian-archive-bookworm-security-automatic.gpg"),
    ),
    (
        "debian-archive-bookworm-stable",
        include_bytes!("keys/debian-archive-bookworm-stable.gpg"),
    ),
    (
        "debian-archive-trixie-automatic",
        include_bytes!("keys/debian-archive-trixie-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-security-automatic",
        include_bytes!("keys/debian-archive-trixie-security-automatic.gpg"),
    ),
    (
        "debian-archive-trixie-stable",
        include_bytes!("keys/debian-archive-trixie-stable.gpg"),
    ),
];

/// The largest keyring file read (Debian's full archive keyring is under 100 KB).
const MAX_KEYRING_BYTES: u64 = 4 << 20;

/// Public keys trusted to sign a suite's `InRelease`.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
}

/// A primary key and those of its subkeys whose binding signatures verify (a subkey without a
/// valid binding, or with a revocation, is not the primary key holder's and is dropped).
#[derive(Debug, Clone)]
pub(crate) struct TrustedKey {
    pub(crate) primary: SignedPublicKey,
    pub(crate) subkeys: Vec<SignedPublicSubKey>,
}

impl Keyring {
    /// Debian's archive signing keys for bookworm and trixie, embedded in kiln.
    pub fn debian() -> Keyring {
        let mut keys = Vec::new();
        for (name, bytes) in DEBIAN_KEYS {
            let parsed = parse_keys(bytes)
                .unwrap_or_else(|reason| panic!("embedded key {name} does not parse: {reason}"));
            keys.extend(parsed);
        }
        Keyring { keys }
    }

    /// The public keys in a binary or ASCII-armored keyring file (`[base] debian_keyring`),
    /// which replace the embedded ones.
    pub fn load(path: &Path) -> Result<Keyring, DebianError> {
        let failed = |reason: String| DebianError::Keyring {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|err| failed(err.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEYRING_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| failed(err.to_string()))?;
        if bytes.len() as u64 > MAX_KEYRING_BYTES {
            return Err(failed(format!(
                "it is larger than {MAX_KEYRING_BYTES} bytes"
            )));
        }
        let keys = parse_keys(&bytes).map_err(failed)?;
        if keys.is_empty() {
            return Err(failed("it holds no public key".into()));
        }
        Ok(Keyring { keys })
    }

    /// The primary key fingerprints, uppercase hex, in file order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| format!("{:X}", key.primary.fingerprint()))
            .collect()
    }

    pub(crate) fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// Every transferable public key in `bytes` (binary or armored), keeping the subkeys whose
/// bindings verify.
fn parse_keys(bytes: &[u8]) -> Result<Vec<TrustedKey>, String> {
    let (keys, _) = SignedPublicKey::from_reader_many(BufReader::new(bytes))
        .map_err(|err| format!("not an OpenPGP keyring: {err}"))?;
    let mut trusted = Vec::new();
    for key in keys {
        let key = key.map_err(|err| format!("a key does not parse: {err}"))?;
        let subkeys = key
            .public_subkeys
            .iter()
            .filter(|subkey| subkey.verify_bindings(&key.primary_key).is_ok())
            .cloned()
            .collect();
        trusted.push(TrustedKey {
            primary: key,
            subkeys,
        });
    }
    Ok(trusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_keys_are_embedded() {
        let keyring = Keyring::debian();
        let fingerprints = keyring.fingerprints();
        // The bookworm keys (checked against debian-archive-keyring 2023.3+deb12u2).
        for expected in [
            "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8",
            "4D64FEC119C2029067D6E791F8D2585B8783D481",
            "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0",
        ] {
            assert!(
                fingerprints.iter().any(|f| f == expected),
                "{expected} in {fingerprints:?}"
            );
        }
        assert_eq!(fingerprints.len(), 6);
        // The automatic keys sign with subkeys, whose bindings must have verified.
        let automatic = keyring
            .keys()
            .iter()
            .find(|k| format!("{:X}", k.primary.fingerprint()) == fingerprints[0])
            .expect("bookworm automatic key");
        let subkeys: Vec<String> = automatic
            .subkeys
            .iter()
            .map(|s| format!("{:X}", s.key.fingerprint()))
            .collect();
        assert!(
            subkeys.contains(&"4CB50190207B4758A3F73A796ED0E7B82643E131".to_owned()),
            "{subkeys:?}"
        );
    }

    #[test]
    fn load_reads_binary_and_armored_keyrings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = dir.path().join("stable.gpg");
        std::fs::write(&binary, DEBIAN_KEYS[2].1).expect("write");
        let keyring = Keyring::load(&binary).expect("binary keyring");
        assert_eq!(
            keyring.fingerprints(),
            ["4D64FEC119C2029067D6E791F8D2585B8783D481"]
        );
        let armored = dir.path().join("stable.asc");
        let text = keyring.keys()[0]
            .primary
            .to_armored_string(Default::default())
            .expect("armor");
        std::fs::write(&armored, text).expect("write");
        let keyring = Keyring::load(&armored).expect("armored keyring");
        assert_eq!(keyring.fingerprints().len(), 1);
    }

    #[test]
    fn load_names_the_file_when_it_is_not_a_keyring() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys.txt");
        std::fs::write(&path, "not a key\n").expect("write");
        let error = Keyring::load(&path).expect_err("not a keyring").to_string();
        assert!(
            error.contains("keys.txt") && error.contains("debian_keyring"),
            "{error}"
        );
        let error = Keyring::load(&dir.path().join("absent.gpg"))
            .expect_err("absent")
            .to_string();
        assert!(error.contains("absent.gpg"), "{error}");
    }
}
