//! # kubegate-routing
//!
//! Pure, allocation-free routing for the kubegate gateway: which **target** a request goes to
//! (a URL prefix → [`Target`]) and what it **asks for** ([`RequestInfo`], computed exactly as
//! kube-apiserver computes it). No I/O, no async, no dependencies on HTTP crates.
//!
//! ## Two modes
//!
//! The **central** gateway serves every Loft-compatible prefix:
//!
//! ```
//! use kubegate_routing::{OpsPath, RequestInfo, Router, Target};
//!
//! let router = Router::central();
//! let route = router
//!     .route("/kubernetes/project/team-a/space/dev/api/v1/namespaces/dev/pods", None)
//!     .unwrap();
//! assert_eq!(route.target, Target::ProjectSpace { project: "team-a", space: "dev" });
//! assert_eq!(route.rest, "/api/v1/namespaces/dev/pods");
//!
//! let info = RequestInfo::parse("GET", &route.rest, route.query).unwrap();
//! assert_eq!((&*info.verb, info.namespace, info.resource), ("list", "dev", "pods"));
//!
//! // The bare prefix maps to `/`.
//! assert_eq!(router.route("/kubernetes/management", None).unwrap().rest, "/");
//! assert_eq!(router.route("/readyz", None).unwrap().target, Target::Ops(OpsPath::Readyz));
//! ```
//!
//! An **agent** (direct cluster endpoint) runs inside one cluster: `/kubernetes/cluster/…` has no
//! cluster name, and the legacy virtual-cluster form drops the cluster segment.
//!
//! ```
//! use kubegate_routing::{Router, Target};
//!
//! let router = Router::agent("prod").unwrap();
//! let route = router.route("/kubernetes/cluster/api/v1/pods", None).unwrap();
//! assert_eq!(route.target, Target::Cluster { cluster: "prod" });
//! assert_eq!(route.rest, "/api/v1/pods");
//!
//! let route = router.route("/kubernetes/virtualcluster/team/vc1/version", None).unwrap();
//! assert_eq!(
//!     route.target,
//!     Target::VirtualCluster { cluster: "prod", namespace: "team", name: "vc1" }
//! );
//! assert!(router.route("/kubernetes/management/apis", None).is_err());
//! ```
//!
//! ## Safety of the prefix
//!
//! A route never names a target whose prefix is not literally in the input. Dot segments,
//! empty segments, encoded slashes or backslashes, control bytes and names that are not RFC 1123
//! labels are refused with a typed [`RouteError`] before anything else looks at the path.
//!
//! ## Cost
//!
//! Routing plus RequestInfo of a request whose path has no escapes and whose query has no
//! selectors allocates nothing; see the crate README for measured figures.

pub mod accept;
mod error;
mod list_options;
mod path;
mod query;
mod redact;
mod redirect;
mod request_info;
mod router;
pub mod selectors;
mod target;

pub use error::RouteError;
pub use path::{decode_path, is_dns1123_label};
pub use query::Query;
pub use redact::redact_url;
pub use redirect::{UpstreamOrigin, path_prepend, rewrite_location};
pub use request_info::{RequestInfo, RequestInfoError, STANDARD_VERBS};
pub use router::{NameKind, Route, Router};
pub use selectors::SelectorError;
pub use target::{OpsPath, Target};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
