//! URL prefix → [`Target`] for the two gateway modes.

use std::borrow::Cow;

use crate::path::{
    check_raw, check_segments, decode_path, is_dns1123_label, is_dns1123_label_of_label_bytes,
    is_plain_path, label_prefix_len,
};
use crate::{OpsPath, RouteError, Target};

/// Which kind of name a prefix segment holds (used in [`RouteError::InvalidName`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A connected cluster.
    Cluster,
    /// A namespace on a host cluster.
    Namespace,
    /// A virtual cluster.
    VirtualCluster,
    /// A project.
    Project,
    /// A project space.
    Space,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Cluster => "cluster",
            NameKind::Namespace => "namespace",
            NameKind::VirtualCluster => "virtual cluster",
            NameKind::Project => "project",
            NameKind::Space => "space",
        })
    }
}

/// The result of routing: where the request goes and what path the destination sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The destination named by the prefix.
    pub target: Target<'a>,
    /// The path below the prefix, percent-decoded (what kube-apiserver's `req.URL.Path` would be
    /// at the upstream). Always starts with `/`; a bare prefix maps to `/`. Borrowed unless the
    /// path held escapes.
    pub rest: Cow<'a, str>,
    /// The same suffix of the raw, still-escaped input path: the path to forward upstream, so the
    /// upstream decodes exactly what the client sent.
    pub raw_rest: &'a str,
    /// The raw query string, untouched.
    pub query: Option<&'a str>,
    /// The path ended at the prefix (`/kubernetes/cluster/prod`, no `/` after it), so the
    /// location below the prefix is empty. kube-apiserver's proxy handler answers a GET or HEAD
    /// for an empty location with a `301` to the path plus `/` (spec vector V5.5); `rest` and
    /// `raw_rest` are `/` all the same, for the methods it passes on.
    pub bare_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Central,
    Agent { cluster: String },
}

/// Maps gateway URL prefixes to targets (spec/loft-api.md §3).
///
/// Central mode serves every target; agent mode (a direct cluster endpoint) serves the cluster it
/// runs in under `/kubernetes/cluster/…` with no cluster name, legacy virtual clusters under
/// `/kubernetes/virtualcluster/$NS/$VC/…`, the two project forms, and the ops endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    mode: Mode,
}

impl Router {
    /// A router for the central gateway.
    pub fn central() -> Self {
        Router {
            mode: Mode::Central,
        }
    }

    /// A router for an agent serving the cluster named `cluster` (used as the
    /// [`Target::Cluster`] name, so scopes naming the cluster apply at the agent too).
    pub fn agent(cluster: impl Into<String>) -> Result<Self, RouteError> {
        let cluster = cluster.into();
        if !is_dns1123_label(&cluster) {
            return Err(RouteError::InvalidName {
                kind: NameKind::Cluster,
            });
        }
        Ok(Router {
            mode: Mode::Agent { cluster },
        })
    }

    /// Whether this router serves agent mode.
    pub fn is_agent(&self) -> bool {
        matches!(self.mode, Mode::Agent { .. })
    }

    /// Routes a request given its raw (still percent-encoded) path and raw query.
    ///
    /// ```
    /// use kubegate_routing::{Router, Target};
    ///
    /// let router = Router::central();
    /// let route = router.route("/kubernetes/cluster/prod/api/v1/pods", Some("limit=500")).unwrap();
    /// assert_eq!(route.target, Target::Cluster { cluster: "prod" });
    /// assert_eq!(route.rest, "/api/v1/pods");
    /// assert_eq!(route.query, Some("limit=500"));
    ///
    /// // One prefix can never reach another target.
    /// assert!(router.route("/kubernetes/cluster/a/../../management/apis", None).is_err());
    /// ```
    pub fn route<'a>(
        &'a self,
        raw_path: &'a str,
        query: Option<&'a str>,
    ) -> Result<Route<'a>, RouteError> {
        // Almost every real path has no escape, control byte, `//` or `/.`, which makes the
        // precise checks and the decoding unnecessary. A prefix the router matched is made of
        // literals and RFC 1123 names joined by `/`, which hold none of those, so one
        // vectorizable scan of what follows the prefix proves the whole path plain.
        if let Ok((target, raw_rest)) = self.target(raw_path)
            && (raw_rest.is_empty() || is_plain_path(raw_rest))
        {
            let bare_prefix = raw_rest.is_empty();
            let raw_rest = if bare_prefix { "/" } else { raw_rest };
            return Ok(Route {
                target,
                rest: Cow::Borrowed(raw_rest),
                raw_rest,
                query,
                bare_prefix,
            });
        }
        self.route_checked_in_full(raw_path, query)
    }

    /// [`Router::route`] for a path that is not plain or names no target: every check runs
    /// before the prefix is trusted, so the error is the one the first failing check gives.
    #[cold]
    #[inline(never)]
    fn route_checked_in_full<'a>(
        &'a self,
        raw_path: &'a str,
        query: Option<&'a str>,
    ) -> Result<Route<'a>, RouteError> {
        check_raw(raw_path)?;
        check_segments(raw_path)?;
        let (target, raw_rest) = self.target(raw_path)?;
        let bare_prefix = raw_rest.is_empty();
        let raw_rest = if bare_prefix { "/" } else { raw_rest };
        Ok(Route {
            target,
            rest: decode_path(raw_rest)?,
            raw_rest,
            query,
            bare_prefix,
        })
    }

    fn target<'a>(&'a self, path: &'a str) -> Result<(Target<'a>, &'a str), RouteError> {
        // Nearly every request is for `/kubernetes/…`: one comparison with the literal instead of
        // a search for the end of the segment and a match on it.
        if let Some(after) = literal_segment(path, "kubernetes") {
            return self.kubernetes(after);
        }
        let (first, after) = split_segment(path).ok_or(RouteError::NotFound)?;
        let central = matches!(self.mode, Mode::Central);
        match first {
            "auth" if central => Ok((Target::Auth, after)),
            "oidc" if central => Ok((Target::Oidc, after)),
            "grafana" if central => {
                let (cluster, after) = name(after, NameKind::Cluster)?;
                Ok((Target::Grafana { cluster }, after))
            }
            "healthz" => Ok((Target::Ops(OpsPath::Healthz), path)),
            "livez" => Ok((Target::Ops(OpsPath::Livez), path)),
            "readyz" => Ok((Target::Ops(OpsPath::Readyz), path)),
            "version" if after.is_empty() => Ok((Target::Ops(OpsPath::Version), path)),
            "metrics" if after.is_empty() => Ok((Target::Ops(OpsPath::Metrics), path)),
            _ => Err(RouteError::NotFound),
        }
    }

    fn kubernetes<'a>(&'a self, path: &'a str) -> Result<(Target<'a>, &'a str), RouteError> {
        if let Some(after) = literal_segment(path, "cluster") {
            return match &self.mode {
                Mode::Central => {
                    let (cluster, after) = name(after, NameKind::Cluster)?;
                    Ok((Target::Cluster { cluster }, after))
                }
                Mode::Agent { cluster } => Ok((Target::Cluster { cluster }, after)),
            };
        }
        if let Some(after) = literal_segment(path, "virtualcluster") {
            let (cluster, after) = match &self.mode {
                Mode::Central => name(after, NameKind::Cluster)?,
                Mode::Agent { cluster } => (cluster.as_str(), after),
            };
            let (namespace, after) = name(after, NameKind::Namespace)?;
            let (name, after) = name(after, NameKind::VirtualCluster)?;
            let target = Target::VirtualCluster {
                cluster,
                namespace,
                name,
            };
            return Ok((target, after));
        }
        if let Some(after) = literal_segment(path, "project") {
            let (project, after) = name(after, NameKind::Project)?;
            if let Some(after) = literal_segment(after, "space") {
                let (space, after) = name(after, NameKind::Space)?;
                return Ok((Target::ProjectSpace { project, space }, after));
            }
            if let Some(after) = literal_segment(after, "virtualcluster") {
                let (virtual_cluster, after) = name(after, NameKind::VirtualCluster)?;
                let target = Target::ProjectVirtualCluster {
                    project,
                    virtual_cluster,
                };
                return Ok((target, after));
            }
            return Err(RouteError::NotFound);
        }
        match (&self.mode, literal_segment(path, "management")) {
            (Mode::Central, Some(after)) => Ok((Target::Management, after)),
            _ => Err(RouteError::NotFound),
        }
    }
}

/// What follows `/segment` when it is the whole first segment of `path` (`""` or `/…`).
fn literal_segment<'a>(path: &'a str, segment: &str) -> Option<&'a str> {
    let after = path.strip_prefix('/')?.strip_prefix(segment)?;
    (after.is_empty() || after.starts_with('/')).then_some(after)
}

/// Splits `/seg/rest…` into `("seg", "/rest…")`; `/seg` and `/seg/` give `("seg", "")` / `("seg", "/")`.
/// `None` when nothing is left.
fn split_segment(path: &str) -> Option<(&str, &str)> {
    let body = path.strip_prefix('/')?;
    if body.is_empty() {
        return None;
    }
    // The `/` stays with the rest.
    match crate::path::find_byte(body.as_bytes(), b'/') {
        Some(i) => Some(body.split_at(i)),
        None => Some((body, "")),
    }
}

/// The first segment of `path` (`/name…`), which must be an RFC 1123 label, and what follows
/// it. One pass by table: the segment ends at the first byte a label cannot hold, which must be
/// a `/` (or the end of the path).
fn name(path: &str, kind: NameKind) -> Result<(&str, &str), RouteError> {
    let body = path.strip_prefix('/').ok_or(RouteError::NotFound)?;
    if body.is_empty() {
        return Err(RouteError::NotFound);
    }
    let end = label_prefix_len(body.as_bytes());
    match (body.get(..end), body.get(end..)) {
        (Some(segment), Some(after))
            if (after.is_empty() || after.starts_with('/'))
                && is_dns1123_label_of_label_bytes(segment) =>
        {
            Ok((segment, after))
        }
        _ => Err(RouteError::InvalidName { kind }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Routing that scans only what follows the prefix agrees with checking the whole path
        /// first, errors included.
        #[test]
        fn scanning_the_rest_agrees_with_checking_in_full(
            segments in proptest::collection::vec(
                proptest::sample::select(vec![
                    "kubernetes", "kubernetes", "cluster", "virtualcluster", "project", "space",
                    "management", "grafana", "auth", "healthz", "version", "prod", "team-a",
                    "Prod", "-x", "api", "v1", "", ".", "..", "%2e", "%2F", "%41", "%zz", "a b",
                    "a\\b", "\u{7f}", "é",
                ]),
                0..9,
            ),
            trailing_slash in proptest::bool::ANY,
        ) {
            let mut path = format!("/{}", segments.join("/"));
            if trailing_slash {
                path.push('/');
            }
            for router in [Router::central(), Router::agent("here").unwrap()] {
                proptest::prop_assert_eq!(
                    router.route(&path, Some("q")),
                    router.route_checked_in_full(&path, Some("q")),
                    "{:?}",
                    path
                );
            }
        }
    }
}
