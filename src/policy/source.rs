//! Reading policy sources: files and directories, in the order SPEC §2 gives, and parsing
//! each into a [`Document`]. This is the only part of the policy module that touches the
//! file system.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::document::Document;
use super::error::{PolicyError, Problem};
use super::syntax;

/// A parser's message without the text it quotes: its kind (`invalid YAML`), where
/// (`line 2 column 9`) and what (`unknown field`), when it says, and nothing from the
/// document itself.
fn unquoted(message: &str) -> String {
    let kind = message.split(':').next().unwrap_or("invalid document");
    let first_line = message.lines().next().unwrap_or_default();
    let mut at = String::new();
    if let Some(start) = first_line.find("line ") {
        let rest = &first_line[start..];
        let mut words = rest.split([' ', ',', ':']);
        if let (Some("line"), Some(line), Some("column"), Some(column)) =
            (words.next(), words.next(), words.next(), words.next())
            && line.bytes().all(|b| b.is_ascii_digit())
            && column.bytes().all(|b| b.is_ascii_digit())
        {
            at = format!(" at line {line} column {column}");
        }
    }
    // The parser's own words before it quotes anything (`unknown field`), from whichever
    // part of the first line follows the kind and the location.
    let what = first_line
        .rsplit(": ")
        .next()
        .and_then(|tail| tail.split('`').next())
        .map(str::trim)
        .filter(|w| {
            !w.is_empty() && w.len() <= 40 && w.bytes().all(|b| b.is_ascii_lowercase() || b == b' ')
        })
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    format!("{kind}{at}{what} (a fetched document's text is not quoted)")
}

/// The largest policy the loader accepts, summed over all documents (64 MiB).
pub const DEFAULT_MAX_POLICY_BYTES: u64 = 64 * 1024 * 1024;

/// The bytes of one policy document and the name it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDocument {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Whether a parse error may quote the document's text (a local file), or only say
    /// where the error is (a fetched bundle: its bytes may be any server's page).
    pub quote: bool,
}

impl SourceDocument {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
            quote: true,
        }
    }

    /// A fetched document: its parse errors name the line and column, never its text.
    pub fn fetched(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            quote: false,
            ..Self::new(name, bytes)
        }
    }

    /// Parses the document: JSON when the name ends in `.json`, YAML otherwise.
    pub fn parse(&self) -> Result<Document, Problem> {
        let problem = |message: String| Problem::new(&self.name, "document", message);
        let text = std::str::from_utf8(&self.bytes)
            .map_err(|e| problem(format!("is not valid UTF-8: {e}")))?;
        // (`Utf8Error` says where, never what.)
        if text.trim().is_empty() {
            return Err(problem("is empty (expected at least `version: 1`)".into()));
        }
        // The parsers stop at the first error; `serde_path_to_error` says where in the
        // document it was (`groups[0].member`), which becomes the problem's object.
        let mut path = String::new();
        let parsed = if self.name.to_ascii_lowercase().ends_with(".json") {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
                .and_then(|doc| de.end().map(|()| doc))
                .map_err(|e| format!("invalid JSON: {e}"))
        } else {
            // One reading for YAML and JSON: `true`/`false` are the only booleans, and a
            // plain scalar that reads as a number or boolean is not a string (quote it).
            let options = serde_saphyr::options! {
                strict_booleans: true,
                no_schema: true,
            };
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    path = e.path().to_string();
                    e.into_inner()
                })
            })
            .map_err(|e| format!("invalid YAML: {e}"))
        };
        let doc: Document = parsed.map_err(|message| {
            // A segment the parser could not name (a key written twice) shows as `?`: the
            // object is then the part before it.
            let known = path.trim_end_matches('?').trim_end_matches('.');
            let object = match known {
                "" | "." => "document",
                known => known,
            };
            // The YAML parser's advice to its own callers means nothing to a policy's author.
            let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
            if !self.quote {
                return Problem::new(&self.name, "document", unquoted(&message));
            }
            Problem::new(
                &self.name,
                syntax::escape_controls(object).into_owned(),
                syntax::escape_controls(&message).into_owned(),
            )
        })?;
        match doc.version {
            Some(1) => Ok(doc),
            Some(other) => Err(problem(format!(
                "unsupported `version: {other}` (this build reads version 1)"
            ))),
            None => Err(problem(
                "missing required key `version` (use `version: 1`)".into(),
            )),
        }
    }
}

/// The revision of a policy: lowercase hex SHA-256 of the sources' bytes in load order.
pub fn revision(sources: &[SourceDocument]) -> String {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update(&source.bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a file name is one a directory (or a bundle) is read for: not hidden, and
/// exactly SPEC §2's `*.yaml|*.yml|*.json` (`policy.YAML` is not read). Judged on the
/// name's bytes, so a name that is not UTF-8 (`deny-\xff.yaml`) is still a policy file,
/// never silently left out.
pub fn is_policy_name(name: &[u8]) -> bool {
    !name.starts_with(b".")
        && (name.ends_with(b".yaml") || name.ends_with(b".yml") || name.ends_with(b".json"))
}

/// A policy file to read: the name it is shown under, and where its bytes are read from
/// (the same path, except in a Kubernetes ConfigMap volume; see [`expand_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub shown: PathBuf,
    pub read: PathBuf,
}

/// Lists the files a source path stands for: the file itself, or the policy files of a
/// directory (sorted by name, not recursive, hidden names skipped, symlinks followed).
///
/// A directory holding a `..data` symlink is a ConfigMap volume: the kubelet swaps
/// `..data` to a new directory in one step, and every visible file is a symlink through
/// it. Such a directory is listed and read in the directory `..data` points to when it is
/// listed, so that a read overlapping a swap sees one version of every file, never a mix.
/// Files are still shown under the directory the user gave.
pub fn expand_path(path: &Path) -> Result<Vec<PolicyFile>, Problem> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path)
        .map_err(|e| Problem::new(&shown, "source", format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![PolicyFile {
            shown: path.to_path_buf(),
            read: path.to_path_buf(),
        }]);
    }
    let data = path.join("..data");
    let listed = match fs::symlink_metadata(&data) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(&data)
            .map_err(|e| Problem::new(&shown, "source", format!("cannot resolve `..data`: {e}")))?,
        _ => path.to_path_buf(),
    };
    let entries = fs::read_dir(&listed)
        .map_err(|e| Problem::new(&shown, "source", format!("cannot list directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Problem::new(&shown, "source", format!("cannot list directory: {e}")))?;
        if !is_policy_name(entry.file_name().as_encoded_bytes()) {
            continue;
        }
        // Skip directories that happen to carry a policy-like name (symlinks followed).
        // Anything else is listed: `read_limited` refuses what is not a regular file (a
        // FIFO, a device, a broken link), each with its own problem.
        if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        files.push(PolicyFile {
            shown: path.join(entry.file_name()),
            read: entry.path(),
        });
    }
    files.sort_by(|a, b| a.shown.cmp(&b.shown));
    Ok(files)
}

/// Reads every source path, in order, refusing policies larger than `max_bytes` in all.
///
/// A source that cannot be read does not stop the others from being read: the error
/// lists every source that failed, so `validate` prints every problem at once. The size
/// limit is the exception: past it nothing more is read.
pub fn read_paths(paths: &[PathBuf], max_bytes: u64) -> Result<Vec<SourceDocument>, PolicyError> {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut total: u64 = 0;
    for path in paths {
        let files = match expand_path(path) {
            Ok(files) if files.is_empty() => {
                problems.push(Problem::new(
                    path.display().to_string(),
                    "source",
                    "directory holds no *.yaml, *.yml or *.json policy file".into(),
                ));
                continue;
            }
            Ok(files) => files,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for file in files {
            let shown = file.shown.display().to_string();
            match read_limited(&file.read, max_bytes.saturating_sub(total)) {
                Ok(bytes) => {
                    total = total.saturating_add(bytes.len() as u64);
                    docs.push(SourceDocument::new(shown, bytes));
                }
                Err(ReadError::TooBig) => {
                    problems.push(Problem::new(
                        &shown,
                        "source",
                        format!("policy exceeds the size limit of {max_bytes} bytes"),
                    ));
                    return Err(PolicyError { problems });
                }
                Err(ReadError::Failed(message)) => {
                    problems.push(Problem::new(&shown, "source", message));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(docs)
    } else {
        Err(PolicyError { problems })
    }
}

/// Why [`read_limited`] returned no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// More than the limit.
    TooBig,
    /// Not a regular file, or an I/O error (the message says which).
    Failed(String),
}

/// Reads a regular file of at most `limit` bytes. A FIFO, a device or a socket is refused
/// before it is opened (opening a FIFO would wait for a writer, and `/dev/zero` never
/// ends), and no more than `limit + 1` bytes are ever read, so a file growing while it is
/// read cannot exhaust memory either.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let failed = |e: std::io::Error| ReadError::Failed(format!("cannot be read: {e}"));
    let meta = fs::metadata(path).map_err(failed)?;
    if !meta.is_file() {
        return Err(ReadError::Failed("is not a regular file".into()));
    }
    if meta.len() > limit {
        return Err(ReadError::TooBig);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooBig);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_document_is_never_quoted() {
        let doc = SourceDocument::fetched(
            "https://b.example/p.yaml",
            "version: 1\nroles: [{nam: R}]\n",
        );
        let e = doc.parse().unwrap_err().to_string();
        assert!(
            e.contains("line 2 column") && e.contains("unknown field"),
            "{e}"
        );
        assert!(!e.contains("nam"), "{e}");
        let page = SourceDocument::fetched("p.yaml", "<html>secret-page: [1\n</html>");
        let e = page.parse().unwrap_err().to_string();
        assert!(!e.contains("secret") && !e.contains("html"), "{e}");
    }

    #[test]
    fn a_directory_reads_the_three_extensions_exactly() {
        for (name, read) in [
            ("a.yaml", true),
            ("a.yml", true),
            ("a.json", true),
            ("a.YAML", false),
            ("a.Json", false),
            ("a.yaml.bak", false),
            (".a.yaml", false),
            ("yaml", false),
        ] {
            assert_eq!(is_policy_name(name.as_bytes()), read, "{name}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_still_a_policy_file() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"deny-\xff.yaml");
        fs::write(dir.path().join(name), "version: 1\n").unwrap();
        let hidden = std::ffi::OsStr::from_bytes(b".deny-\xff.yaml");
        fs::write(dir.path().join(hidden), "version: 1\n").unwrap();
        let files = expand_path(dir.path()).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].read.file_name(), Some(name));
    }

    #[test]
    fn every_unreadable_source_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        fs::write(&good, "version: 1\n").unwrap();
        let missing = [dir.path().join("one.yaml"), dir.path().join("two.yaml")];
        let paths = [missing[0].clone(), good, missing[1].clone()];
        let err = read_paths(&paths, 1 << 20).unwrap_err();
        let documents: Vec<&str> = err.problems.iter().map(|p| p.document.as_str()).collect();
        assert_eq!(
            documents,
            [
                missing[0].display().to_string(),
                missing[1].display().to_string()
            ]
        );
    }
}
