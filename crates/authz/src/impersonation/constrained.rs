//! Constrained impersonation (KEP-5284): the impersonation filter kube-apiserver runs by default
//! since 1.36 (`spec/kubernetes-edges.md` §3.3). It tries the constrained modes, each needing
//! `impersonate-on:<mode>:<verb>` on the request itself and `impersonate:<mode>` on what is
//! impersonated, then the legacy checks, and reports the first refusal when every mode fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use crate::identity::{
    ALL_AUTHENTICATED, ALL_UNAUTHENTICATED, ANONYMOUS, SYSTEM_MASTERS, is_dns1123_subdomain,
    matches_dns1123_subdomain_pattern, service_account_groups, split_service_account_username,
};
use crate::text::go_quote;
use crate::{Attributes, Authorizer, Error, Identity, forbidden};

use super::ImpersonationRequest;

/// The extra key a service account's token carries for the node its pod runs on.
const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// What the associated-node mode shows authorizers instead of the requestor's extra values.
const ASSOCIATED_NODE_KEYS: &str = "authentication.kubernetes.io/associated-node-keys";
/// The fixed groups of an impersonated node.
const NODES_GROUP: &str = "system:nodes";
const NODE_USERNAME_PREFIX: &str = "system:node:";
/// From this many groups (or extra values) on, one wildcard check is tried before the
/// individual ones.
const MANY_CHECKS: usize = 4;
/// How many requestors [`ImpersonationModes`] remembers a mode for (kube-apiserver's LRU size).
const REMEMBERED_REQUESTORS: usize = 10_000;

/// One way kube-apiserver lets a requestor impersonate, in the order it tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImpersonationMode {
    /// A service account impersonating the node its pod runs on (user name only).
    AssociatedNode,
    /// Any node, `system:node:<name>` (user name only).
    ArbitraryNode,
    /// A service account (user name only).
    ServiceAccount,
    /// Any other user, with groups, UID and extra values.
    UserInfo,
    /// The checks kube-apiserver ran before 1.36: verb `impersonate`, nothing on the request.
    Legacy,
}

impl ImpersonationMode {
    /// Every mode, in the order kube-apiserver tries them.
    pub const ALL: [ImpersonationMode; 5] = [
        ImpersonationMode::AssociatedNode,
        ImpersonationMode::ArbitraryNode,
        ImpersonationMode::ServiceAccount,
        ImpersonationMode::UserInfo,
        ImpersonationMode::Legacy,
    ];

    /// `associated-node`, `arbitrary-node`, `serviceaccount`, `user-info` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            ImpersonationMode::AssociatedNode => "associated-node",
            ImpersonationMode::ArbitraryNode => "arbitrary-node",
            ImpersonationMode::ServiceAccount => "serviceaccount",
            ImpersonationMode::UserInfo => "user-info",
            ImpersonationMode::Legacy => "legacy",
        }
    }

    /// The verb checked on what is impersonated: `impersonate:<mode>`, or `impersonate` for
    /// the legacy mode. It is also the audit event's `impersonationConstraint` of a constrained
    /// mode.
    pub fn verb(self) -> &'static str {
        match self {
            ImpersonationMode::AssociatedNode => "impersonate:associated-node",
            ImpersonationMode::ArbitraryNode => "impersonate:arbitrary-node",
            ImpersonationMode::ServiceAccount => "impersonate:serviceaccount",
            ImpersonationMode::UserInfo => "impersonate:user-info",
            ImpersonationMode::Legacy => "impersonate",
        }
    }

    fn is_constrained(self) -> bool {
        self != ImpersonationMode::Legacy
    }
}

/// An impersonation that was allowed: who the request runs as, and the mode that allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impersonated {
    /// The identity the rest of the request runs as.
    pub identity: Identity,
    /// The mode whose checks passed.
    pub mode: ImpersonationMode,
}

/// Remembers, per requestor, the mode that last let it impersonate, and tries that mode first
/// next time, as kube-apiserver does. Apart from saving authorizer calls, this decides which
/// refusal a requestor sees when every mode fails: the remembered mode's, else the first
/// mode's in [`ImpersonationMode::ALL`] order.
#[derive(Debug, Default)]
pub struct ImpersonationModes {
    last: Mutex<HashMap<String, ImpersonationMode>>,
}

impl ImpersonationModes {
    fn remembered(&self, requestor: &str) -> Option<ImpersonationMode> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(requestor)
            .copied()
    }

    fn remember(&self, requestor: &str, mode: ImpersonationMode) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.get(requestor) == Some(&mode) {
            return;
        }
        // Bounded like kube-apiserver's LRU; forgetting only changes the order modes are tried.
        if last.len() >= REMEMBERED_REQUESTORS && !last.contains_key(requestor) {
            last.clear();
        }
        last.insert(requestor.to_owned(), mode);
    }
}

/// Run kube-apiserver's constrained impersonation filter (the default since 1.36) for the
/// request `request_attributes` describes (its `user` is the requestor).
///
/// - no impersonation headers → `Ok(None)`;
/// - groups, extras or a UID without a user → [`Error::ImpersonationWithoutUser`] (400, with
///   kube-apiserver's message);
/// - no mode allows it → [`Error::ImpersonationForbidden`] (403) with the first refusal;
/// - otherwise the identity to run the request as, and the mode that allowed it.
///
/// Unlike [`impersonate`](super::impersonate) (the filter before 1.36), a legacy check that
/// is allowed stays allowed when the authorizer also reports an error, and the legacy checks
/// run in kube-apiserver's new order: user, UID, groups, extra values (by key).
/// kube-apiserver also caches successful checks for 10 s; kubegate asks its authorizer every
/// time, so a revoked permission takes effect at once.
pub fn impersonate_constrained<A: Authorizer + ?Sized>(
    request_attributes: &Attributes<'_>,
    request: &ImpersonationRequest,
    authorizer: &A,
    modes: &ImpersonationModes,
) -> Result<Option<Impersonated>, Error> {
    if request.is_empty() {
        return Ok(None);
    }
    let wanted = Wanted::from(request);
    if wanted.user.is_empty() {
        return Err(Error::ImpersonationWithoutUser {
            message: format!(
                "requested {} without impersonating a user name",
                wanted.go_syntax()
            ),
        });
    }
    let requestor = request_attributes.user;
    let remembered = modes.remembered(&requestor.name);
    let mut first_refusal = None;
    let order = remembered.into_iter().chain(
        ImpersonationMode::ALL
            .into_iter()
            .filter(|m| Some(*m) != remembered),
    );
    for mode in order {
        match check_mode(mode, request_attributes, &wanted, authorizer) {
            Ok(Some(identity)) => {
                modes.remember(&requestor.name, mode);
                return Ok(Some(Impersonated { identity, mode }));
            }
            Ok(None) => {}
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    // The legacy mode applies to every request, so a refusal was recorded.
    Err(
        first_refusal.unwrap_or_else(|| Error::ImpersonationWithoutUser {
            message: "all impersonation modes failed".to_owned(),
        }),
    )
}

/// The impersonation asked for, as kube-apiserver's filter holds it (extra values by key).
struct Wanted<'r> {
    user: &'r str,
    uid: &'r str,
    groups: &'r [String],
    extra: BTreeMap<&'r str, Vec<&'r str>>,
}

impl<'r> From<&'r ImpersonationRequest> for Wanted<'r> {
    fn from(request: &'r ImpersonationRequest) -> Self {
        let mut extra: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, value) in &request.extra {
            extra.entry(key).or_default().push(value);
        }
        Wanted {
            user: &request.user,
            uid: &request.uid,
            groups: &request.groups,
            extra,
        }
    }
}

impl Wanted<'_> {
    fn only_username(&self) -> bool {
        self.uid.is_empty() && self.groups.is_empty() && self.extra.is_empty()
    }
}

impl Wanted<'_> {
    /// Go's `%#v` of the `*user.DefaultInfo` kube-apiserver builds from the headers.
    fn go_syntax(&self) -> String {
        let strings = |values: &[&str]| {
            values
                .iter()
                .map(|v| go_quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let groups = if self.groups.is_empty() {
            "[]string(nil)".to_owned()
        } else {
            let groups: Vec<&str> = self.groups.iter().map(String::as_str).collect();
            format!("[]string{{{}}}", strings(&groups))
        };
        let extra = if self.extra.is_empty() {
            "map[string][]string(nil)".to_owned()
        } else {
            let entries: Vec<String> = self
                .extra
                .iter()
                .map(|(key, values)| format!("{}:[]string{{{}}}", go_quote(key), strings(values)))
                .collect();
            format!("map[string][]string{{{}}}", entries.join(", "))
        };
        format!(
            "&user.DefaultInfo{{Name:{}, UID:{}, Groups:{groups}, Extra:{extra}}}",
            go_quote(self.user),
            go_quote(self.uid)
        )
    }
}

/// The node name in `system:node:<name>`, when it is a valid one.
fn node_name(username: &str) -> Option<&str> {
    username
        .strip_prefix(NODE_USERNAME_PREFIX)
        .filter(|name| is_dns1123_subdomain(name))
}

/// Whether `mode` applies to this requestor and this impersonation at all.
fn applies(mode: ImpersonationMode, wanted: &Wanted<'_>, requestor: &Identity) -> bool {
    match mode {
        ImpersonationMode::AssociatedNode => {
            wanted.only_username()
                && node_name(wanted.user).is_some_and(|node| {
                    split_service_account_username(&requestor.name).is_some()
                        && requestor
                            .extra
                            .get(NODE_NAME_KEY)
                            .is_some_and(|v| v.len() == 1 && v[0] == node)
                })
        }
        ImpersonationMode::ArbitraryNode => {
            wanted.only_username() && node_name(wanted.user).is_some()
        }
        ImpersonationMode::ServiceAccount => {
            wanted.only_username() && split_service_account_username(wanted.user).is_some()
        }
        ImpersonationMode::UserInfo => {
            node_name(wanted.user).is_none()
                && split_service_account_username(wanted.user).is_none()
        }
        ImpersonationMode::Legacy => true,
    }
}

/// One mode's checks: `Ok(None)` when the mode does not apply.
fn check_mode<A: Authorizer + ?Sized>(
    mode: ImpersonationMode,
    request_attributes: &Attributes<'_>,
    wanted: &Wanted<'_>,
    authorizer: &A,
) -> Result<Option<Identity>, Error> {
    let requestor = request_attributes.user;
    if !applies(mode, wanted, requestor) {
        return Ok(None);
    }
    // The associated-node mode shows authorizers the requestor without its extra values
    // (only their keys), so that one decision holds for the service account on every node.
    let shown;
    let checker = if mode == ImpersonationMode::AssociatedNode {
        let keys = requestor.extra.keys().cloned().collect();
        shown = Identity {
            extra: BTreeMap::from([(ASSOCIATED_NODE_KEYS.to_owned(), keys)]),
            ..requestor.clone()
        };
        Checker {
            authorizer,
            requestor: &shown,
            any_node: true,
        }
    } else {
        Checker {
            authorizer,
            requestor,
            any_node: false,
        }
    };
    if mode.is_constrained() {
        let verb = format!("impersonate-on:{}:{}", mode.name(), request_attributes.verb);
        checker.check(Attributes {
            user: checker.requestor,
            verb: &verb,
            ..*request_attributes
        })?;
    }
    checker.impersonated(mode, wanted).map(Some)
}

/// Runs the checks of one mode against the authorizer.
struct Checker<'c, A: ?Sized> {
    authorizer: &'c A,
    /// The requestor as the authorizer is shown it.
    requestor: &'c Identity,
    /// Check `impersonate:associated-node` for every node name (`*`), as the mode's decisions
    /// hold for every node the service account may run on.
    any_node: bool,
}

impl<A: Authorizer + ?Sized> Checker<'_, A> {
    /// Allowed, or the 403 kube-apiserver's `checkAuthorization` builds. An allowed decision
    /// stands even when the authorizer also reports an error.
    fn check(&self, attributes: Attributes<'_>) -> Result<(), Error> {
        let attributes = self.shown(attributes);
        let decision = self.authorizer.authorize(&attributes);
        if decision.is_allowed() {
            return Ok(());
        }
        let message = match (&decision.error, decision.reason.as_ref()) {
            (Some(error), "") => error.clone(),
            (Some(error), reason) => format!("{error}: {reason}"),
            (None, reason) => reason.to_owned(),
        };
        Err(refused(&attributes, &message))
    }

    /// A refusal of kubegate's own (a sanity rule), for these attributes.
    fn refuse(&self, attributes: Attributes<'_>, message: &str) -> Error {
        refused(&self.shown(attributes), message)
    }

    /// The attributes as the authorizer is shown them.
    fn shown<'a>(&self, attributes: Attributes<'a>) -> Attributes<'a> {
        if self.any_node && attributes.verb == ImpersonationMode::AssociatedNode.verb() {
            Attributes {
                name: "*",
                ..attributes
            }
        } else {
            attributes
        }
    }

    /// The checks on what is impersonated, then the identity the request runs as.
    fn impersonated(
        &self,
        mode: ImpersonationMode,
        wanted: &Wanted<'_>,
    ) -> Result<Identity, Error> {
        let constrained = mode.is_constrained();
        let verb = mode.verb();
        // Users and groups are core-group resources in the legacy checks.
        let group = if constrained {
            "authentication.k8s.io"
        } else {
            ""
        };
        let on = |resource, name| {
            Attributes::resource(self.requestor, verb, group, resource)
                .with_api_version("v1")
                .named(name)
        };
        let mut groups = wanted.groups.to_vec();

        let mut user = on("users", wanted.user);
        let node = if constrained {
            node_name(wanted.user)
        } else {
            None
        };
        let service_account = split_service_account_username(wanted.user);
        if let Some(node) = node {
            user = Attributes {
                resource: "nodes",
                name: node,
                ..user
            };
            if !wanted.groups.is_empty() {
                return Err(self.refuse(
                    user,
                    &format!(
                        "when impersonating a node, cannot impersonate groups {}",
                        go_string_slice(wanted.groups)
                    ),
                ));
            }
            groups = vec![NODES_GROUP.to_owned()];
        } else if let Some((namespace, name)) = service_account {
            user = Attributes {
                resource: "serviceaccounts",
                ..user
            }
            .in_namespace(namespace)
            .named(name);
            if constrained && !wanted.groups.is_empty() {
                return Err(self.refuse(
                    user,
                    &format!(
                        "when impersonating a service account, cannot impersonate groups {}",
                        go_string_slice(wanted.groups)
                    ),
                ));
            }
            if wanted.groups.is_empty() {
                groups = service_account_groups(namespace);
            }
        }
        self.check(user)?;

        if !wanted.uid.is_empty() {
            let uid = Attributes::resource(self.requestor, verb, "authentication.k8s.io", "uids")
                .with_api_version("v1")
                .named(wanted.uid);
            self.check(uid)?;
        }

        if !wanted.groups.is_empty() {
            let any = on("groups", "");
            if constrained {
                if wanted.groups.iter().any(String::is_empty) {
                    return Err(
                        self.refuse(any, "impersonating the empty string group is not allowed")
                    );
                }
                if wanted.groups.iter().any(|g| g == SYSTEM_MASTERS) {
                    return Err(self.refuse(
                        any.named(SYSTEM_MASTERS),
                        "impersonating the system:masters group is not allowed",
                    ));
                }
            }
            let all_at_once = constrained
                && wanted.groups.len() >= MANY_CHECKS
                && self.check(any.named("*")).is_ok();
            if !all_at_once {
                for g in wanted.groups {
                    self.check(any.named(g))?;
                }
            }
        }

        if !wanted.extra.is_empty() {
            let any =
                Attributes::resource(self.requestor, verb, "authentication.k8s.io", "userextras")
                    .with_api_version("v1");
            if constrained && let Err(problem) = validate_extra(&wanted.extra) {
                return Err(self.refuse(any, &problem));
            }
            let values: usize = wanted.extra.values().map(Vec::len).sum();
            let many = wanted.extra.len() >= MANY_CHECKS || values >= MANY_CHECKS;
            let all_at_once =
                constrained && many && self.check(any.on_subresource("*").named("*")).is_ok();
            if !all_at_once {
                for (key, values) in &wanted.extra {
                    for value in values {
                        self.check(any.on_subresource(key).named(value))?;
                    }
                }
            }
        }

        let name = wanted.user;
        if name == ANONYMOUS {
            if !groups.iter().any(|g| g == ALL_UNAUTHENTICATED) {
                groups.push(ALL_UNAUTHENTICATED.to_owned());
            }
        } else if !groups
            .iter()
            .any(|g| g == ALL_UNAUTHENTICATED || g == ALL_AUTHENTICATED)
        {
            groups.push(ALL_AUTHENTICATED.to_owned());
        }
        Ok(Identity {
            name: name.to_owned(),
            uid: wanted.uid.to_owned(),
            groups,
            extra: wanted
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|v| (*v).to_owned()).collect()))
                .collect(),
        })
    }
}

fn refused(attributes: &Attributes<'_>, message: &str) -> Error {
    Error::ImpersonationForbidden(Box::new(forbidden(attributes, message)))
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[{}]", quoted.join(" "))
}

/// kube-apiserver's sanity rules for impersonated extra values in the constrained modes.
fn validate_extra(extra: &BTreeMap<&str, Vec<&str>>) -> Result<(), String> {
    for (key, values) in extra {
        if key.is_empty() {
            return Err("impersonating the empty string key in extra is not allowed".to_owned());
        }
        if let Err(problem) = domain_prefixed_path(key) {
            return Err(format!(
                "impersonating an invalid key in extra is not allowed: {problem}"
            ));
        }
        if *key != key.to_lowercase() {
            return Err(format!(
                "impersonating a non-lowercase key in extra is not allowed: {}",
                go_quote(key)
            ));
        }
        if values.is_empty() {
            return Err("impersonating empty values in extra is not allowed".to_owned());
        }
        if values.iter().any(|v| v.is_empty()) {
            return Err("impersonating the empty string value in extra is not allowed".to_owned());
        }
    }
    Ok(())
}

const DNS1123_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// apimachinery's `IsDomainPrefixedPath(field.NewPath("extra", "key"), key)`, aggregated.
fn domain_prefixed_path(key: &str) -> Result<(), String> {
    let invalid = |value: &str, detail: &str| {
        format!("extra.key: Invalid value: {}: {detail}", go_quote(value))
    };
    let Some((host, path)) = key
        .split_once('/')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
    else {
        return Err(invalid(
            key,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        ));
    };
    let mut problems = Vec::new();
    if host.len() > 253 {
        problems.push(invalid(host, "must be no more than 253 characters"));
    }
    if !matches_dns1123_subdomain_pattern(host) {
        problems.push(invalid(host, DNS1123_SUBDOMAIN_ERROR));
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b));
    if !path_ok {
        problems.push(invalid(
            path,
            "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')",
        ));
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.remove(0)),
        _ => Err(format!("[{}]", problems.join(", "))),
    }
}
