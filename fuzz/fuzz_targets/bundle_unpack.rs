//! The policy bundle unpacker: a `.tar.gz` from a bundle server is the tree it was built
//! from, or an error.
//!
//! Input: the bytes of a tar archive (gzip'd here before unpacking), or, when they already
//! start with the gzip magic, the bundle as fetched.
//!
//! Checked:
//! - `unpack` never panics, and its size limit holds;
//! - every document it returns names a path inside the bundle (no `..` part, not
//!   absolute), not hidden, with a policy file name, and free of control, line-separator or
//!   bidi characters;
//! - no error message carries such characters raw.

#![no_main]

use std::io::Write as _;

use iot_authz::policy::syntax::is_unsafe_char;
use iot_authz::sources::bundle::unpack;
use libfuzzer_sys::fuzz_target;

const URL: &str = "https://bundles.example/p.tar.gz";
const MAX: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let body = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = gz.write_all(data);
        gz.finish().unwrap_or_default()
    };
    match unpack(URL, &body, MAX) {
        Ok(documents) => {
            let mut total = 0u64;
            for doc in &documents {
                total += doc.bytes.len() as u64;
                let Some(path) = doc.name.strip_prefix(&format!("{URL}#")) else {
                    // A single document (no gzip magic): named by the URL alone.
                    assert_eq!(doc.name, URL);
                    continue;
                };
                assert!(!path.starts_with('/'), "{path:?}");
                assert!(
                    path.split('/')
                        .all(|part| part != ".." && !part.starts_with('.')),
                    "{path:?}"
                );
                assert!(!path.chars().any(is_unsafe_char), "{path:?}");
                let name = path.rsplit('/').next().unwrap_or(path);
                assert!(
                    [".yaml", ".yml", ".json"]
                        .iter()
                        .any(|ext| name.ends_with(ext)),
                    "{path:?}"
                );
                assert!(!doc.quote, "fetched documents are never quoted");
            }
            assert!(total <= MAX);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.chars().any(is_unsafe_char), "{message:?}");
        }
    }
});
