//! `meta.k8s.io/v1` Status error bodies, serialised exactly as kube-apiserver does
//! (field order, omitted empties, Go's HTML escaping, compact + `\n` or pretty).

use bytes::Bytes;
use serde::Serialize;

use crate::authz::Attributes;

/// A Kubernetes `Status` object as kube-apiserver emits it for errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    /// `Failure` or `Success`.
    pub status: &'static str,
    /// Human-readable message; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable reason; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Details; omitted when `None`, `{}` when present but empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<StatusDetails>>,
    /// The HTTP status code.
    pub code: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
struct Empty {}

/// `details` of a Status; every field is omitted when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural) for NotFound/Forbidden/AlreadyExists/Conflict.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Causes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds after which to retry; also sent as `Retry-After`.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One cause inside `details.causes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// Reason.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// `qualifiedResource.String()`: `resource` or `resource.group`.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn go_quote(s: &str) -> String {
    // Go's %q for the printable strings Kubernetes names are made of; serde_json's escaping
    // matches strconv.Quote for those.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl Status {
    fn failure(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> Self {
        Self {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message,
            reason: reason.to_owned(),
            details: details.map(Box::new),
            code,
        }
    }

    /// The `Success` Status an exec stream ends with on channel 3.
    pub fn success() -> Self {
        Self {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Success",
            message: String::new(),
            reason: String::new(),
            details: None,
            code: 0,
        }
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::failure(401, "Unauthorized", "Unauthorized".to_owned(), None)
    }

    /// 403 from `NewForbidden(gr, name, err)`.
    pub fn forbidden(group: &str, resource: &str, name: &str, err: &str) -> Self {
        let message = if resource.is_empty() && group.is_empty() {
            format!("forbidden: {err}")
        } else if name.is_empty() {
            format!("{} is forbidden: {err}", qualified(group, resource))
        } else {
            format!(
                "{} {} is forbidden: {err}",
                qualified(group, resource),
                go_quote(name)
            )
        };
        let details = StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
            ..StatusDetails::default()
        };
        Self::failure(403, "Forbidden", message, Some(details))
    }

    /// 404 `NewNotFound(gr, name)`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let message = format!(
            "{} {} not found",
            qualified(group, resource),
            go_quote(name)
        );
        Self::failure(
            404,
            "NotFound",
            message,
            Some(Self::object_details(group, resource, name)),
        )
    }

    /// 404 for a path the server does not serve (kube answers `the server could not find the
    /// requested resource`).
    pub fn path_not_found() -> Self {
        let message = "the server could not find the requested resource".to_owned();
        Self::failure(404, "NotFound", message, Some(StatusDetails::default()))
    }

    /// 409 `NewAlreadyExists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let message = format!(
            "{} {} already exists",
            qualified(group, resource),
            go_quote(name)
        );
        let details = Self::object_details(group, resource, name);
        Self::failure(409, "AlreadyExists", message, Some(details))
    }

    /// 409 `NewConflict`.
    pub fn conflict(group: &str, resource: &str, name: &str, err: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {}: {err}",
            qualified(group, resource),
            go_quote(name)
        );
        Self::failure(
            409,
            "Conflict",
            message,
            Some(Self::object_details(group, resource, name)),
        )
    }

    /// 400 `NewBadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(400, "BadRequest", message.into(), None)
    }

    /// 405 `NewMethodNotSupported`.
    pub fn method_not_supported(group: &str, resource: &str, action: &str) -> Self {
        let message = format!(
            "{action} is not supported on resources of kind {}",
            go_quote(&qualified(group, resource))
        );
        let details = StatusDetails {
            group: group.to_owned(),
            kind: resource.to_owned(),
            ..StatusDetails::default()
        };
        Self::failure(405, "MethodNotAllowed", message, Some(details))
    }

    /// 406 `NewNotAcceptable`-style answer.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::failure(406, "NotAcceptable", message.into(), None)
    }

    /// 410 `Expired` (a watch from a compacted resourceVersion).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::failure(410, "Expired", message.into(), None)
    }

    /// 415 `UnsupportedMediaType`; `accepted` lists the media types that would work.
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {accepted}; got {content_type}"
        );
        Self::failure(415, "UnsupportedMediaType", message, None)
    }

    /// 422 `Invalid` with one field cause.
    pub fn invalid(group: &str, kind: &str, name: &str, field: &str, detail: &str) -> Self {
        let message = format!(
            "{} {} is invalid: {field}: {detail}",
            qualified(group, kind),
            go_quote(name)
        );
        let details = StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            causes: vec![StatusCause {
                reason: "FieldValueInvalid".to_owned(),
                message: detail.to_owned(),
                field: field.to_owned(),
            }],
            ..StatusDetails::default()
        };
        Self::failure(422, "Invalid", message, Some(details))
    }

    /// 500 `NewInternalError(err)`.
    pub fn internal_error(err: &str) -> Self {
        let details = StatusDetails {
            causes: vec![StatusCause {
                message: err.to_owned(),
                ..StatusCause::default()
            }],
            ..StatusDetails::default()
        };
        Self::failure(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
            Some(details),
        )
    }

    /// 503 `NewServiceUnavailable(msg)`.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::failure(503, "ServiceUnavailable", message.into(), None)
    }

    /// A generic Status for an injected 5xx (or any code) with a known reason.
    pub fn for_code(code: u16) -> Self {
        match code {
            500 => Self::internal_error("injected fault"),
            503 => Self::service_unavailable("injected fault"),
            504 => Self::failure(
                504,
                "Timeout",
                "Timeout: injected fault".to_owned(),
                Some(StatusDetails::default()),
            ),
            429 => {
                let details = StatusDetails {
                    retry_after_seconds: 1,
                    ..StatusDetails::default()
                };
                Self::failure(
                    429,
                    "TooManyRequests",
                    "injected fault".to_owned(),
                    Some(details),
                )
            }
            _ => Self::failure(
                code,
                "",
                format!("injected fault: status code {code}"),
                None,
            ),
        }
    }

    fn object_details(group: &str, resource: &str, name: &str) -> StatusDetails {
        StatusDetails {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: resource.to_owned(),
            ..StatusDetails::default()
        }
    }

    /// `details.retryAfterSeconds`, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<u32> {
        self.details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
    }

    /// Compact JSON + `\n` (or 2-space pretty without the newline), with Go's `<>&` escaping.
    pub fn to_bytes(&self, pretty: bool) -> Bytes {
        let raw = if pretty {
            serde_json::to_vec_pretty(self)
        } else {
            serde_json::to_vec(self).map(|mut v| {
                v.push(b'\n');
                v
            })
        };
        Bytes::from(go_escape(&raw.unwrap_or_default()))
    }

    /// The Status as a JSON value (for watch `ERROR` events).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Go's `encoding/json` escapes `<`, `>` and `&` inside strings; JSON has them nowhere else.
pub(crate) fn go_escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            _ => out.push(b),
        }
    }
    out
}

/// The user part of a Forbidden message (apiserver `responsewriters/errors.go`), HTML-sanitised.
pub(crate) fn forbidden_reason(attrs: &Attributes<'_>, authorizer_reason: &str) -> String {
    let user = attrs.user.name.as_str();
    let mut msg = if !attrs.resource_request {
        format!(
            "User {} cannot {} path {}",
            go_quote(user),
            attrs.verb,
            go_quote(attrs.path)
        )
    } else {
        let res = if attrs.subresource.is_empty() {
            attrs.resource.to_owned()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {}", go_quote(attrs.namespace))
        };
        format!(
            "User {} cannot {} resource {} in API group {} {scope}",
            go_quote(user),
            attrs.verb,
            go_quote(&res),
            go_quote(attrs.api_group)
        )
    };
    if !authorizer_reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(authorizer_reason);
    }
    msg.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The 403 Status for a denied request (`NewForbidden` with the request's group/resource/name).
pub(crate) fn forbidden_for(attrs: &Attributes<'_>, authorizer_reason: &str) -> Status {
    let reason = forbidden_reason(attrs, authorizer_reason);
    if attrs.resource_request {
        Status::forbidden(attrs.api_group, attrs.resource, attrs.name, &reason)
    } else {
        Status::forbidden("", "", "", &reason)
    }
}

/// apiserver's `isPrettyPrint`: a non-empty `pretty` query value decides (Go's
/// `strconv.ParseBool`; anything it cannot parse is false); otherwise a browser, curl or Wget
/// User-Agent.
pub(crate) fn wants_pretty(query: Option<&str>, user_agent: Option<&str>) -> bool {
    // `url.Values.Get`: the first `pretty`'s value.
    let first = query.unwrap_or("").split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == "pretty").then_some(v)
    });
    if let Some(v) = first.filter(|v| !v.is_empty()) {
        return matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True");
    }
    let ua = user_agent.unwrap_or("");
    ["curl", "Wget", "Mozilla/5.0"]
        .iter()
        .any(|p| ua.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UserInfo;

    fn s(st: &Status) -> String {
        String::from_utf8(st.to_bytes(false).to_vec()).unwrap()
    }

    /// V4.1 TestForbidden.
    #[test]
    fn v4_1_test_forbidden() {
        let cases = [
            (
                "NAME-GET-/whatever",
                Status::forbidden(
                    "",
                    "",
                    "",
                    &forbidden_reason(
                        &Attributes {
                            user: &UserInfo::new("NAME"),
                            verb: "GET",
                            resource_request: false,
                            path: "/whatever",
                            api_group: "",
                            api_version: "v1",
                            resource: "",
                            subresource: "",
                            namespace: "",
                            name: "",
                        },
                        "",
                    ),
                ),
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"NAME\\\" cannot GET path \\\"/whatever\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n",
            ),
            (
                "NAME-GET-/<script>",
                Status::forbidden(
                    "",
                    "",
                    "",
                    &forbidden_reason(
                        &Attributes {
                            user: &UserInfo::new("NAME"),
                            verb: "GET",
                            resource_request: false,
                            path: "/<script>",
                            api_group: "",
                            api_version: "v1",
                            resource: "",
                            subresource: "",
                            namespace: "",
                            name: "",
                        },
                        "",
                    ),
                ),
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"NAME\\\" cannot GET path \\\"/\\u0026lt;script\\u0026gt;\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n",
            ),
            (
                "resource-pod-cluster",
                Status::forbidden(
                    "",
                    "pod",
                    "",
                    &forbidden_reason(
                        &Attributes {
                            user: &UserInfo::new("NAME"),
                            verb: "get",
                            resource_request: true,
                            path: "",
                            api_group: "",
                            api_version: "v1",
                            resource: "pod",
                            subresource: "",
                            namespace: "",
                            name: "",
                        },
                        "",
                    ),
                ),
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod\\\" in API group \\\"\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"pod\"},\"code\":403}\n",
            ),
            (
                "resource-pod-mypod",
                Status::forbidden(
                    "",
                    "pod",
                    "mypod",
                    &forbidden_reason(
                        &Attributes {
                            user: &UserInfo::new("NAME"),
                            verb: "get",
                            resource_request: true,
                            path: "",
                            api_group: "",
                            api_version: "v1",
                            resource: "pod",
                            subresource: "",
                            namespace: "",
                            name: "",
                        },
                        "",
                    ),
                ),
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod \\\"mypod\\\" is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod\\\" in API group \\\"\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"name\":\"mypod\",\"kind\":\"pod\"},\"code\":403}\n",
            ),
            (
                "resource-pod-quota-v2-test",
                Status::forbidden(
                    "v2",
                    "pod",
                    "",
                    &forbidden_reason(
                        &Attributes {
                            user: &UserInfo::new("NAME"),
                            verb: "get",
                            resource_request: true,
                            path: "",
                            api_group: "v2",
                            api_version: "v1",
                            resource: "pod",
                            subresource: "quota",
                            namespace: "test",
                            name: "",
                        },
                        "",
                    ),
                ),
                "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod.v2 is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod/quota\\\" in API group \\\"v2\\\" in the namespace \\\"test\\\"\",\"reason\":\"Forbidden\",\"details\":{\"group\":\"v2\",\"kind\":\"pod\"},\"code\":403}\n",
            ),
        ];
        for (name, status, want) in cases {
            assert_eq!(s(&status), want, "case {name}");
        }
    }

    /// V4.3 other bodies.
    #[test]
    fn v4_3_other_bodies() {
        let cases = [
            ("401", Status::unauthorized(), "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n".to_owned()),
            ("403-anonymous-list-pods", Status::forbidden("", "pods", "", &forbidden_reason(&Attributes { user: &UserInfo::new("system:anonymous"), verb: "list", resource_request: true, path: "", api_group: "", api_version: "v1", resource: "pods", subresource: "", namespace: "default", name: "" }, "")),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods is forbidden: User \\\"system:anonymous\\\" cannot list resource \\\"pods\\\" in API group \\\"\\\" in the namespace \\\"default\\\"\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"pods\"},\"code\":403}\n".to_owned()),
            ("403-cluster-group-resource", Status::forbidden("apps", "deployments", "", &forbidden_reason(&Attributes { user: &UserInfo::new("jane"), verb: "list", resource_request: true, path: "", api_group: "apps", api_version: "v1", resource: "deployments", subresource: "", namespace: "", name: "" }, "")),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps is forbidden: User \\\"jane\\\" cannot list resource \\\"deployments\\\" in API group \\\"apps\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":403}\n".to_owned()),
            ("403-non-resource", Status::forbidden("", "", "", &forbidden_reason(&Attributes { user: &UserInfo::new("jane"), verb: "get", resource_request: false, path: "/metrics", api_group: "", api_version: "v1", resource: "", subresource: "", namespace: "", name: "" }, "")),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"jane\\\" cannot get path \\\"/metrics\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n".to_owned()),
            ("404-object", Status::not_found("", "pods", "foo"),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"foo\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"foo\",\"kind\":\"pods\"},\"code\":404}\n".to_owned()),
            ("404-grouped", Status::not_found("apps", "deployments", "web"),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"web\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n".to_owned()),
            ("500-internal", Status::internal_error("boom"),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Internal error occurred: boom\",\"reason\":\"InternalError\",\"details\":{\"causes\":[{\"message\":\"boom\"}]},\"code\":500}\n".to_owned()),
            ("400-exec-without-upgrade", Status::bad_request("Upgrade request required"),
             "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Upgrade request required\",\"reason\":\"BadRequest\",\"code\":400}\n".to_owned()),
        ];
        for (name, status, want) in cases {
            assert_eq!(s(&status), want, "case {name}");
        }
    }

    #[test]
    fn v4_3_pretty_variant() {
        let body = Status::unauthorized().to_bytes(true);
        let want = "{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"Unauthorized\",\n  \"reason\": \"Unauthorized\",\n  \"code\": 401\n}";
        assert_eq!(String::from_utf8(body.to_vec()).unwrap(), want);
        assert!(wants_pretty(None, Some("curl/8.0")));
        assert!(wants_pretty(Some("pretty=true"), None));
        assert!(!wants_pretty(Some("pretty=false"), Some("curl/8.0")));
        assert!(!wants_pretty(None, Some("kubectl/v1.32")));
        // Go's ParseBool, and an empty value left to the User-Agent.
        assert!(wants_pretty(Some("pretty=t"), None));
        assert!(!wants_pretty(Some("pretty=yes"), Some("curl/8.0")));
        assert!(!wants_pretty(Some("pretty=f"), None));
        assert!(!wants_pretty(Some("pretty"), Some("kubectl/v1.32")));
        assert!(wants_pretty(Some("pretty"), Some("curl/8.0")));
    }
}
