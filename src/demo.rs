//! The embedded demo policy: the built-in role packs (one document per seed product)
//! followed by the demo principals, assignments and routes. The same files ship in
//! `packs/` and `demo/`, so `--policy packs/ --policy demo/` loads the same policy (and
//! the same revision).

use crate::policy::SourceDocument;

/// `(name, text)` of each embedded document, in load order.
pub const DOCUMENTS: [(&str, &str); 6] = [
    (
        "packs/defender-for-iot.yaml",
        include_str!("../packs/defender-for-iot.yaml"),
    ),
    (
        "packs/iot-central.yaml",
        include_str!("../packs/iot-central.yaml"),
    ),
    (
        "packs/iot-platform.yaml",
        include_str!("../packs/iot-platform.yaml"),
    ),
    (
        "packs/operations-dashboard.yaml",
        include_str!("../packs/operations-dashboard.yaml"),
    ),
    (
        "packs/workload-orchestration.yaml",
        include_str!("../packs/workload-orchestration.yaml"),
    ),
    ("demo/demo.yaml", include_str!("../demo/demo.yaml")),
];

/// The embedded demo policy as sources.
pub fn sources() -> Vec<SourceDocument> {
    DOCUMENTS
        .iter()
        .map(|(name, text)| SourceDocument::new(format!("embedded:{name}"), text.as_bytes()))
        .collect()
}
