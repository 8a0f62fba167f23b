//! `scripts/demo.sh` end to end: the script starts iot-authz (this build), the echo
//! upstream and the real Envoy on free ports, and prints the commands to try. Every printed
//! command is run as printed and must give the status its comment documents (a curl's HTTP
//! status, a grpcurl Check's allow or deny) and every `"key":"value"` the comment quotes;
//! each comment is also in the README. A deny's decisionId is in the decision log the demo
//! names. Ctrl-C (SIGINT) stops everything.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::root;

/// The `"key":"value"` and `"key":true|false` fragments a comment quotes.
fn quoted_fragments(comment: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = comment;
    while let Some(start) = rest.find('"') {
        let tail = &rest[start..];
        // "key":
        let Some(key_end) = tail[1..].find('"').map(|i| i + 2) else {
            break;
        };
        let after = &tail[key_end..];
        if let Some(value) = after.strip_prefix(':') {
            let len = if let Some(v) = value.strip_prefix('"') {
                v.find('"').map(|i| i + 2)
            } else {
                Some(
                    value
                        .find(|c: char| !c.is_ascii_alphabetic())
                        .unwrap_or(value.len()),
                )
            };
            if let Some(len) = len {
                out.push(format!("{}:{}", &tail[..key_end], &value[..len]));
                rest = &value[len..];
                continue;
            }
        }
        rest = &tail[key_end..];
    }
    out
}

#[test]
fn the_demo_script_gives_what_it_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut child = Command::new("bash")
        .arg("scripts/demo.sh")
        .current_dir(root())
        .env("IOT_AUTHZ_BIN", env!("CARGO_BIN_EXE_iot-authz"))
        .env("DEMO_ENVOY_PORT", "0")
        .env("DEMO_GRPC_PORT", "0")
        .env("DEMO_HTTP_PORT", "0")
        .env("DEMO_UPSTREAM_PORT", "0")
        .env("DEMO_ENVOY_ADMIN_PORT", "0")
        .env("DEMO_MTLS_PORT", "0")
        .env("DEMO_MTLS_ADMIN_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The script's output, line by line, until it says it is ready.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("the demo did not get ready: {printed:#?}"));
        let ready = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if ready {
            break;
        }
    }
    let field = |label: &str| {
        printed
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` line: {printed:#?}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let envoy = field("Envoy").trim_start_matches("http://").to_owned();
    let decision_log = field("decision log");

    let commands: Vec<(&str, &str)> = printed
        .iter()
        .filter(|l| l.starts_with("  curl ") || l.starts_with("  .venv/bin/grpcurl "))
        .map(|l| l.trim_start().split_once("   # ").expect("a comment"))
        .collect();
    assert_eq!(commands.len(), 12, "{printed:#?}");
    let mut deny_ids = Vec::new();
    for (command, comment) in &commands {
        assert!(
            readme.contains(&format!("   # {comment}")),
            "the README does not document `# {comment}`"
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(command)
            .current_dir(root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace("\": ", "\":");
        let expected = comment.split(',').next().unwrap().trim();
        if command.starts_with("curl ") {
            let status = text.lines().next().unwrap_or_default();
            assert!(
                (status.starts_with("HTTP/1.1 ") || status.starts_with("HTTP/2 "))
                    && status.split(' ').nth(1) == Some(expected),
                "`{command}` gave `{status}`, expected {expected}:\n{text}"
            );
            if expected != "200" {
                let body: serde_json::Value =
                    serde_json::from_str(text.lines().last().unwrap()).unwrap();
                deny_ids.push(body["decisionId"].as_str().unwrap().to_owned());
            }
        } else {
            assert!(out.status.success(), "`{command}`: {text}");
            let allowed = text.contains("\"allowed\":true");
            assert_eq!(allowed, expected == "allow", "`{command}`:\n{text}");
        }
        for fragment in quoted_fragments(comment) {
            assert!(
                text.contains(&fragment),
                "`{command}` gave no {fragment}:\n{text}"
            );
        }
    }
    // Every deny's decisionId leads to its line in the decision log.
    assert_eq!(deny_ids.len(), 5);
    let log = std::fs::read_to_string(&decision_log).unwrap();
    for id in &deny_ids {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"decisionId\":\"{id}\""))),
            "decision {id} is not in the log"
        );
    }

    // Ctrl-C stops everything and removes the demo's files.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo did not stop on SIGINT")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l == "demo: stopped"), "{rest:?}");
    assert!(
        TcpStream::connect(&envoy).is_err(),
        "Envoy still listens on {envoy}"
    );
    assert!(!std::path::Path::new(&decision_log).exists());
}
