//! # kubegate
//!
//! One authenticated, authorized, audited front door to many Kubernetes API servers.
//! This facade re-exports the workspace crates; see the README for the crate map.

pub use kubegate_api as api;
pub use kubegate_authz as authz;
pub use kubegate_client as client;
pub use kubegate_gateway as gateway;
pub use kubegate_proxy as proxy;
pub use kubegate_routing as routing;
pub use kubegate_tokens as tokens;
