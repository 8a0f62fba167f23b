//! The server's defaults, written once: `serve`'s flags (in each flag's unit) and the
//! options structs' `Default` ([`super::ServerOptions`], [`super::cache::CacheOptions`])
//! both read these.

/// `--max-message-bytes`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// `--request-timeout-ms`.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// `--concurrency-per-connection`.
pub const CONCURRENCY_PER_CONNECTION: usize = 1024;
/// `--max-concurrent-streams`.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// `--max-connections`.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `--header-read-timeout-ms`.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// `--idle-timeout-ms`.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// `--max-connection-age-seconds`.
pub const MAX_CONNECTION_AGE_SECONDS: u64 = 600;
/// `--grpc-idle-timeout-ms`.
pub const GRPC_IDLE_TIMEOUT_MS: u64 = 300_000;
/// `--max-header-bytes`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// `--shutdown-delay-ms`.
pub const SHUTDOWN_DELAY_MS: u64 = 0;
/// `--shutdown-grace-ms`.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// The opening timeout (no flag: the TLS handshake's, and the first bytes').
pub const OPENING_TIMEOUT_MS: u64 = 10_000;
/// `--decision-cache-size`.
pub const DECISION_CACHE_SIZE: u64 = 100_000;
/// `--decision-cache-ttl-seconds`.
pub const DECISION_CACHE_TTL_SECONDS: u64 = 60;
