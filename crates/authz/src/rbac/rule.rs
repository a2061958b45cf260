//! One compiled RBAC `PolicyRule` and kube-apiserver's `RuleAllows`.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::Attributes;

/// Resources a built-in tier rule refuses even though its lists say `*`
/// (`kubegate:viewer` reads everything but secrets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exclusions {
    /// `(api group, resource)` pairs excluded with all their subresources.
    pub(crate) resources: &'static [(&'static str, &'static str)],
    /// Subresources excluded on every resource.
    pub(crate) subresources: &'static [&'static str],
}

/// A list of names where `*` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    star: bool,
    names: Box<[Box<str>]>,
}

impl Names {
    fn new(values: Option<&Vec<String>>) -> Self {
        let values = values.map(Vec::as_slice).unwrap_or_default();
        Self {
            star: values.iter().any(|v| v == "*"),
            names: values.iter().map(|v| v.as_str().into()).collect(),
        }
    }

    fn matches(&self, value: &str) -> bool {
        self.star || self.names.iter().any(|n| &**n == value)
    }
}

/// A `PolicyRule` prepared for matching.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CompiledRule {
    verbs: Names,
    api_groups: Names,
    resources: Box<[Box<str>]>,
    resource_names: Box<[Box<str>]>,
    non_resource_urls: Box<[Box<str>]>,
    exclusions: Exclusions,
    source: PolicyRule,
}

fn boxed(values: Option<&Vec<String>>) -> Box<[Box<str>]> {
    values
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_str().into())
        .collect()
}

impl CompiledRule {
    pub(crate) fn new(rule: &PolicyRule) -> Self {
        Self::with_exclusions(rule, Exclusions::default())
    }

    pub(crate) fn with_exclusions(rule: &PolicyRule, exclusions: Exclusions) -> Self {
        Self {
            verbs: Names::new(Some(&rule.verbs)),
            api_groups: Names::new(rule.api_groups.as_ref()),
            resources: boxed(rule.resources.as_ref()),
            resource_names: boxed(rule.resource_names.as_ref()),
            non_resource_urls: boxed(rule.non_resource_urls.as_ref()),
            exclusions,
            source: rule.clone(),
        }
    }

    /// The rule as written.
    pub(crate) fn source(&self) -> &PolicyRule {
        &self.source
    }

    /// kube-apiserver `RuleAllows` (k/k `pkg/registry/rbac/validation/rule.go`).
    pub(crate) fn allows(&self, a: &Attributes<'_>) -> bool {
        if !self.verbs.matches(a.verb) {
            return false;
        }
        if !a.is_resource_request {
            return non_resource_url_matches(&self.non_resource_urls, a.path);
        }
        self.api_groups.matches(a.api_group)
            && resource_matches(&self.resources, a.resource, a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| &**n == a.name))
            && !self.excluded(a)
    }

    fn excluded(&self, a: &Attributes<'_>) -> bool {
        self.exclusions
            .resources
            .iter()
            .any(|(group, resource)| *group == a.api_group && *resource == a.resource)
            || (!a.subresource.is_empty() && self.exclusions.subresources.contains(&a.subresource))
    }
}

/// `ResourceMatches` without building `resource/subresource`: a rule resource matches when it
/// is `*`, equals the combined resource, or is exactly `*/<subresource>` for a subresource
/// request. `pods/*` is not a wildcard.
pub(crate) fn resource_matches(rule_resources: &[Box<str>], resource: &str, subresource: &str) -> bool {
    rule_resources.iter().any(|rule| {
        let rule = &**rule;
        if rule == "*" {
            return true;
        }
        if subresource.is_empty() {
            return rule == resource;
        }
        if let Some(sub) = rule.strip_prefix("*/")
            && sub == subresource
        {
            return true;
        }
        rule.len() == resource.len() + 1 + subresource.len()
            && rule.starts_with(resource)
            && rule.as_bytes()[resource.len()] == b'/'
            && rule.ends_with(subresource)
    })
}

/// `NonResourceURLMatches`: `*`, exact equality, or a trailing-`*` prefix (all trailing `*`
/// removed before the prefix test).
pub(crate) fn non_resource_url_matches(rule_urls: &[Box<str>], path: &str) -> bool {
    rule_urls.iter().any(|rule| {
        let rule = &**rule;
        rule == "*"
            || rule == path
            || (rule.ends_with('*') && path.starts_with(rule.trim_end_matches('*')))
    })
}
