//! docs/tutorial.md, followed literally: every `yaml file=PATH` block is written to PATH in
//! an empty directory, and every `console` block's `$ iot-authz ...` commands are run there
//! by bash, in order, with the real binary first on PATH. Each command's output must be
//! exactly what the page shows (a 64-digit revision is compared as "a revision"), and its
//! exit code the one its `# exit N` comment gives (0 without one).

use std::path::Path;
use std::process::Command;

use crate::support::root;

/// A step of the tutorial, in page order.
enum Step {
    File {
        path: String,
        text: String,
    },
    Run {
        line: usize,
        command: String,
        exit: i32,
        output: String,
    },
}

fn steps(page: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = page.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut block = Vec::new();
        for (n, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push((n + 1, l));
        }
        if let Some(path) = info.strip_prefix("yaml file=") {
            let text: Vec<&str> = block.iter().map(|(_, l)| *l).collect();
            steps.push(Step::File {
                path: path.trim().to_owned(),
                text: text.join("\n") + "\n",
            });
        } else if info == "console" {
            let mut i = 0;
            while i < block.len() {
                let (n, l) = block[i];
                let mut command = l
                    .strip_prefix("$ ")
                    .unwrap_or_else(|| panic!("tutorial line {n}: expected `$ command`: {l}"))
                    .to_owned();
                i += 1;
                while command.ends_with('\\') && i < block.len() {
                    command.pop();
                    command.push_str(block[i].1.trim_start());
                    i += 1;
                }
                let exit = command
                    .rsplit_once("# exit ")
                    .map_or(0, |(_, code)| code.trim().parse().unwrap());
                let mut output = String::new();
                while i < block.len() && !block[i].1.starts_with("$ ") {
                    output.push_str(block[i].1);
                    output.push('\n');
                    i += 1;
                }
                steps.push(Step::Run {
                    line: n,
                    command,
                    exit,
                    output,
                });
            }
        }
    }
    steps
}

/// Every run of 64 lowercase hex digits (a revision) as `<revision>`.
fn mask_revisions(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|&&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            .count();
        if run == 64 {
            out.push_str("<revision>");
            i += 64;
        } else if run > 0 {
            out.push_str(&text[i..i + run]);
            i += run;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn the_tutorial_works_as_written() {
    let page = std::fs::read_to_string(root().join("docs/tutorial.md")).unwrap();
    let steps = steps(&page);
    let runs = steps
        .iter()
        .filter(|s| matches!(s, Step::Run { .. }))
        .count();
    let files = steps.len() - runs;
    assert!(runs >= 10 && files >= 3, "{runs} commands, {files} files");
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_iot-authz"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in &steps {
        match step {
            Step::File { path, text } => {
                let file = dir.path().join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, text).unwrap();
            }
            Step::Run {
                line,
                command,
                exit,
                output,
            } => {
                assert!(
                    command.starts_with("iot-authz "),
                    "tutorial line {line}: {command}"
                );
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(command)
                    .current_dir(dir.path())
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert_eq!(
                    mask_revisions(&stdout),
                    mask_revisions(output),
                    "tutorial line {line}: `{command}` printed this instead (stderr: {})",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    out.status.code(),
                    Some(*exit),
                    "tutorial line {line}: `{command}`"
                );
            }
        }
    }
}
