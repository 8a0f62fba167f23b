//! What the engine and overlay benchmarks share: the policy size they are asked for, and
//! the loop that runs one check per iteration.

use std::hint::black_box;
use std::process::exit;

use iot_authz::policy::{CheckRequest, Snapshot};

use crate::workload::Size;

/// The size `IOT_AUTHZ_BENCH_ASSIGNMENTS` asks for (`10000`, `10_000`, `10k`, `1M`,
/// `2.5M`), or the issue's size without it; exits with status 2 on anything else.
pub fn size_from_env() -> Size {
    match std::env::var("IOT_AUTHZ_BENCH_ASSIGNMENTS") {
        Ok(text) => match parse_count(&text) {
            Some(n) if n > 0 => Size::with_assignments(n),
            _ => {
                eprintln!(
                    "IOT_AUTHZ_BENCH_ASSIGNMENTS: expected a count like 10000, 10k or 1M, got `{text}`"
                );
                exit(2);
            }
        },
        Err(_) => Size::ISSUE,
    }
}

/// `10000`, `10_000`, `10k`, `1M`, `2.5M`.
fn parse_count(text: &str) -> Option<usize> {
    let text = text.trim().replace('_', "");
    let (number, unit) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1_000.0),
        'm' | 'M' => (&text[..text.len() - 1], 1_000_000.0),
        _ => (text.as_str(), 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value >= 0.0).then(|| (value * unit).round() as usize)
}

/// One check per iteration, walking a request list so no request stays hot.
pub fn rotate(b: &mut criterion::Bencher<'_>, snapshot: &Snapshot, requests: &[CheckRequest<'_>]) {
    if requests.is_empty() {
        return;
    }
    let len = requests.len();
    let mut i = 0usize;
    b.iter(|| {
        let req = &requests[i];
        i += 1;
        if i == len {
            i = 0;
        }
        black_box(snapshot.check(black_box(req)).map(|d| d.allowed))
    });
}
