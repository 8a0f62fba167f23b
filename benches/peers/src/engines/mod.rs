//! One module per engine: each encodes the workload its own way and answers
//! `(principal, action, scope)` with allow or deny.

pub mod casbin;
pub mod cedar;
pub mod iot_authz;
pub mod rego;

/// An engine ready to answer checks. Each check starts from the same three strings, so the
/// time of building the engine's own request (Cedar's `Request`, Rego's input document,
/// casbin's arguments) is part of the time per check, as it would be in a service.
pub trait Engine {
    fn check(&mut self, principal: &str, action: &str, scope: &str) -> bool;
}
