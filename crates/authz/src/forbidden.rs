//! kube-apiserver's 403 for a denied request (`responsewriters.Forbidden` + `NewForbidden`).

use crate::Attributes;
use crate::text::{html_sanitize, push_go_json_string, push_go_quoted};

/// A 403 `Forbidden` Status, as kube-apiserver builds it for denied attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// The Status `message`.
    pub message: String,
    /// `details.name` (the object name; may be empty).
    pub name: String,
    /// `details.group` (the API group; may be empty).
    pub group: String,
    /// `details.kind` — the **resource** (plural), as kube-apiserver puts it; may be empty.
    pub kind: String,
}

/// The user part: `User "<u>" cannot <verb> resource "<res>[/<sub>]" in API group "<g>" in the
/// namespace "<ns>"` / `at the cluster scope`, or `User "<u>" cannot <verb> path "<path>"`,
/// HTML-sanitised.
pub fn forbidden_user_message(a: &Attributes<'_>) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("User ");
    push_go_quoted(&mut out, &a.user.name);
    out.push_str(" cannot ");
    out.push_str(a.verb);
    if !a.is_resource_request {
        out.push_str(" path ");
        push_go_quoted(&mut out, a.path);
        return html_sanitize(&out);
    }
    out.push_str(" resource ");
    if a.subresource.is_empty() {
        push_go_quoted(&mut out, a.resource);
    } else {
        push_go_quoted(&mut out, &format!("{}/{}", a.resource, a.subresource));
    }
    out.push_str(" in API group ");
    push_go_quoted(&mut out, a.api_group);
    if a.namespace.is_empty() {
        out.push_str(" at the cluster scope");
    } else {
        out.push_str(" in the namespace ");
        push_go_quoted(&mut out, a.namespace);
    }
    html_sanitize(&out)
}

/// The complete 403 for `a` with the authorizer's `reason` (appended as `": <reason>"` when
/// non-empty, not sanitised — as kube-apiserver does), wrapped the way `NewForbidden` wraps it:
/// `forbidden: …` (no resource), `<res>[.<group>] is forbidden: …`, or
/// `<res>[.<group>] "<name>" is forbidden: …`.
pub fn forbidden(a: &Attributes<'_>, reason: &str) -> Forbidden {
    let mut err = forbidden_user_message(a);
    if !reason.is_empty() {
        err.push_str(": ");
        err.push_str(reason);
    }
    wrap(a, &err)
}

/// The 403 kube-apiserver's pod `exec`/`attach`/`portforward` handlers send when the extra
/// `create` check fails (`ensureAuthorizedForVerb`, since 1.35): `NewForbidden` around the
/// authorizer's raw `reason`, with no `User … cannot …` sentence (so with RBAC's empty reason
/// the message ends in `is forbidden: `).
pub fn forbidden_reason_only(a: &Attributes<'_>, reason: &str) -> Forbidden {
    wrap(a, reason)
}

/// `NewForbidden`'s wrapping of `err`.
fn wrap(a: &Attributes<'_>, err: &str) -> Forbidden {
    let mut message = String::with_capacity(err.len() + 64);
    if a.api_group.is_empty() && a.resource.is_empty() {
        message.push_str("forbidden: ");
    } else {
        message.push_str(a.resource);
        if !a.api_group.is_empty() {
            message.push('.');
            message.push_str(a.api_group);
        }
        if !a.name.is_empty() {
            message.push(' ');
            push_go_quoted(&mut message, a.name);
        }
        message.push_str(" is forbidden: ");
    }
    message.push_str(err);
    Forbidden {
        message,
        name: a.name.to_owned(),
        group: a.api_group.to_owned(),
        kind: a.resource.to_owned(),
    }
}

impl Forbidden {
    /// The exact compact JSON body kube-apiserver writes (Go field order and HTML-safe escaping,
    /// trailing newline).
    pub fn status_json(&self) -> String {
        let mut out = String::with_capacity(self.message.len() + 160);
        out.push_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#,
        );
        push_go_json_string(&mut out, &self.message);
        out.push_str(r#","reason":"Forbidden","details":{"#);
        let mut first = true;
        for (key, value) in [
            ("name", &self.name),
            ("group", &self.group),
            ("kind", &self.kind),
        ] {
            if value.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            push_go_json_string(&mut out, value);
        }
        out.push_str("},\"code\":403}\n");
        out
    }
}
