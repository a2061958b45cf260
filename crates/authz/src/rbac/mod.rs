//! Kubernetes RBAC: rules, aggregation, the compiled policy, and kubegate's tiers.

pub(crate) mod policy;
pub(crate) mod rule;
mod selector;
pub(crate) mod tiers;
