//! One compiled RBAC `PolicyRule` and kube-apiserver's `RuleAllows`.

use k8s_openapi::api::rbac::v1::PolicyRule;
use kubegate_routing::STANDARD_VERBS;

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

/// A string prepared for fast equality: its length and first eight bytes as an integer, so most
/// comparisons are two integer compares instead of a `memcmp` call (which dominated profiles).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'a> {
    len: usize,
    head: u64,
    s: &'a str,
}

fn head(s: &str) -> u64 {
    let b = s.as_bytes();
    match b.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        // Short strings: assemble byte by byte (a variable-length copy would call memmove).
        None => b
            .iter()
            .enumerate()
            .fold(0, |h, (i, &x)| h | (u64::from(x) << (8 * i))),
    }
}

impl<'a> Probe<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Self {
            len: s.len(),
            head: head(s),
            s,
        }
    }
}

/// An owned string with its [`Probe`] key precomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Name {
    len: usize,
    head: u64,
    s: Box<str>,
}

impl Name {
    fn new(s: &str) -> Self {
        Self {
            len: s.len(),
            head: head(s),
            s: s.into(),
        }
    }

    #[inline]
    fn eq(&self, p: &Probe<'_>) -> bool {
        self.len == p.len
            && self.head == p.head
            && (self.len <= 8 || self.s.as_bytes()[8..] == p.s.as_bytes()[8..])
    }
}

/// A list of names; with `star`, `*` in the list matches anything (verbs, API groups).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    star: bool,
    names: Box<[Name]>,
}

impl Names {
    fn new(values: Option<&Vec<String>>, star_is_wildcard: bool) -> Self {
        let values = values.map(Vec::as_slice).unwrap_or_default();
        Self {
            star: star_is_wildcard && values.iter().any(|v| v == "*"),
            names: values.iter().map(|v| Name::new(v)).collect(),
        }
    }

    #[inline]
    fn matches(&self, p: &Probe<'_>) -> bool {
        self.star || self.names.iter().any(|n| n.eq(p))
    }
}

/// Verbs RBAC rules name besides the ones requests carry (`STANDARD_VERBS`).
const RULE_ONLY_VERBS: [&str; 6] = ["impersonate", "bind", "escalate", "use", "approve", "sign"];

/// Verbs common enough to get a bit each (the request verbs, then the rule-only ones): a
/// rule's verbs become a mask, and a request's verb one bit, so the verb check is an AND.
/// Other verbs are compared as strings.
fn verb_bit(verb: &str) -> u32 {
    STANDARD_VERBS
        .iter()
        .chain(&RULE_ONLY_VERBS)
        .position(|v| *v == verb)
        .map_or(0, |i| 1 << i)
}

/// A rule's verbs: `*`, a mask of known verbs, and the rest as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Verbs {
    star: bool,
    mask: u32,
    others: Box<[Name]>,
    all: Box<[Name]>,
}

impl Verbs {
    fn new(verbs: &[String]) -> Self {
        Self {
            star: verbs.iter().any(|v| v == "*"),
            mask: verbs.iter().fold(0, |m, v| m | verb_bit(v)),
            others: verbs
                .iter()
                .filter(|v| verb_bit(v) == 0)
                .map(|v| Name::new(v))
                .collect(),
            all: verbs.iter().map(|v| Name::new(v)).collect(),
        }
    }

    #[inline]
    fn matches(&self, p: &RequestProbe<'_>) -> bool {
        self.star
            || if p.verb_bit != 0 {
                self.mask & p.verb_bit != 0
            } else {
                self.others.iter().any(|n| n.eq(&p.verb))
            }
    }
}

/// One entry of `resources`, split once so matching never builds `resource/subresource`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ResourcePattern {
    /// `*`: everything, subresources included.
    All,
    /// `pods`: the resource itself, no subresource.
    Plain(Name),
    /// `pods/log`: exactly that subresource.
    WithSub(Name, Name),
    /// `*/scale`: that subresource of any resource.
    AnySub(Name),
}

impl ResourcePattern {
    fn new(rule: &str) -> Self {
        if rule == "*" {
            return Self::All;
        }
        match rule.split_once('/') {
            None => Self::Plain(Name::new(rule)),
            Some(("*", sub)) => Self::AnySub(Name::new(sub)),
            Some((resource, sub)) => Self::WithSub(Name::new(resource), Name::new(sub)),
        }
    }
}

/// The request fields a rule looks at, prepared once per decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestProbe<'a> {
    verb: Probe<'a>,
    verb_bit: u32,
    group: Probe<'a>,
    resource: Probe<'a>,
    subresource: Probe<'a>,
    name: Probe<'a>,
    /// The resource contains `/` (only possible for hand-built attributes): match the slow,
    /// literal way.
    odd_resource: bool,
}

impl<'a> RequestProbe<'a> {
    pub(crate) fn new(a: &Attributes<'a>) -> Self {
        Self {
            verb: Probe::new(a.verb),
            verb_bit: verb_bit(a.verb),
            group: Probe::new(a.api_group),
            resource: Probe::new(a.resource),
            subresource: Probe::new(a.subresource),
            name: Probe::new(a.name),
            odd_resource: a.resource.contains('/'),
        }
    }
}

/// A `PolicyRule` prepared for matching.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CompiledRule {
    verbs: Verbs,
    api_groups: Names,
    resources: Box<[ResourcePattern]>,
    resource_names: Names,
    non_resource_urls: Box<[Box<str>]>,
    exclusions: Exclusions,
}

fn boxed(values: Option<&Vec<String>>) -> Box<[Box<str>]> {
    values
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_str().into())
        .collect()
}

/// Whether the concatenations of `a` and `b` are equal, without building them.
fn concat_eq(a: &[&str], b: &[&str]) -> bool {
    let total = |parts: &[&str]| parts.iter().map(|p| p.len()).sum::<usize>();
    total(a) == total(b)
        && a.iter()
            .flat_map(|p| p.bytes())
            .eq(b.iter().flat_map(|p| p.bytes()))
}

impl ResourcePattern {
    fn parts(&self) -> [&str; 3] {
        match self {
            ResourcePattern::All => ["*", "", ""],
            ResourcePattern::Plain(n) => [&n.s, "", ""],
            ResourcePattern::WithSub(r, s) => [&r.s, "/", &s.s],
            ResourcePattern::AnySub(s) => ["*/", &s.s, ""],
        }
    }
}

impl CompiledRule {
    pub(crate) fn new(rule: &PolicyRule) -> Self {
        Self::with_exclusions(rule, Exclusions::default())
    }

    pub(crate) fn with_exclusions(rule: &PolicyRule, exclusions: Exclusions) -> Self {
        Self {
            verbs: Verbs::new(&rule.verbs),
            api_groups: Names::new(rule.api_groups.as_ref(), true),
            resources: rule
                .resources
                .iter()
                .flatten()
                .map(|r| ResourcePattern::new(r))
                .collect(),
            resource_names: Names::new(rule.resource_names.as_ref(), false),
            non_resource_urls: boxed(rule.non_resource_urls.as_ref()),
            exclusions,
        }
    }

    /// The rule as a `PolicyRule` (empty lists become `None`; tier exclusions are not expressible).
    pub(crate) fn to_policy_rule(&self) -> PolicyRule {
        let list = |names: &Names| {
            (!names.names.is_empty()).then(|| names.names.iter().map(|n| n.s.to_string()).collect())
        };
        PolicyRule {
            verbs: self.verbs.all.iter().map(|n| n.s.to_string()).collect(),
            api_groups: list(&self.api_groups),
            resources: (!self.resources.is_empty())
                .then(|| self.resources.iter().map(|r| r.parts().concat()).collect()),
            resource_names: list(&self.resource_names),
            non_resource_urls: (!self.non_resource_urls.is_empty()).then(|| {
                self.non_resource_urls
                    .iter()
                    .map(|u| u.to_string())
                    .collect()
            }),
        }
    }

    /// kube-apiserver `RuleAllows` (k/k `pkg/registry/rbac/validation/rule.go`).
    pub(crate) fn allows(&self, a: &Attributes<'_>, p: &RequestProbe<'_>) -> bool {
        if !a.is_resource_request {
            return self.verbs.matches(p)
                && non_resource_url_matches(&self.non_resource_urls, a.path);
        }
        // Same conjunction as kube-apiserver, most selective test first.
        self.resource_matches(a, p)
            && self.verbs.matches(p)
            && self.api_groups.matches(&p.group)
            && (self.resource_names.names.is_empty() || self.resource_names.matches(&p.name))
            && !self.excluded(a)
    }

    fn resource_matches(&self, a: &Attributes<'_>, p: &RequestProbe<'_>) -> bool {
        let has_sub = p.subresource.len > 0;
        if p.odd_resource {
            // Literal `ResourceMatches` on `resource[/subresource]`, without allocating it.
            let combined: [&str; 3] = if has_sub {
                [a.resource, "/", a.subresource]
            } else {
                [a.resource, "", ""]
            };
            return self.resources.iter().any(|pattern| {
                matches!(pattern, ResourcePattern::All)
                    || concat_eq(&pattern.parts(), &combined)
                    || (has_sub && matches!(pattern, ResourcePattern::AnySub(sub) if sub.eq(&p.subresource)))
            });
        }
        self.resources.iter().any(|pattern| match pattern {
            ResourcePattern::All => true,
            ResourcePattern::Plain(resource) => !has_sub && resource.eq(&p.resource),
            ResourcePattern::WithSub(resource, sub) => {
                has_sub && resource.eq(&p.resource) && sub.eq(&p.subresource)
            }
            ResourcePattern::AnySub(sub) => has_sub && sub.eq(&p.subresource),
        })
    }

    fn excluded(&self, a: &Attributes<'_>) -> bool {
        self.exclusions
            .resources
            .iter()
            .any(|(group, resource)| *group == a.api_group && *resource == a.resource)
            || (!a.subresource.is_empty() && self.exclusions.subresources.contains(&a.subresource))
    }
}

/// `ResourceMatches`, literally: a rule resource matches when it is `*`, equals
/// `resource[/subresource]`, or is exactly `*/<subresource>` for a subresource request.
/// `pods/*` is not a wildcard.
pub(crate) fn resource_matches(
    rule_resources: &[Box<str>],
    resource: &str,
    subresource: &str,
) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NOBODY;
    use proptest::prelude::*;

    const PATTERNS: &[&str] = &[
        "*", "pods", "pods/log", "pods/*", "*/scale", "*/*", "*/", "/x", "a/b/c", "", "pods/",
    ];
    const RESOURCES: &[&str] = &["pods", "*", "a", "a/b", "", "deployments"];
    const SUBRESOURCES: &[&str] = &["", "log", "scale", "*", "x", "b/c"];

    proptest! {
        /// The split, probe-based matcher agrees with kube-apiserver's literal `ResourceMatches`.
        #[test]
        fn fast_resource_matching_agrees_with_literal(
            patterns in proptest::collection::vec(proptest::sample::select(PATTERNS), 0..4),
            resource in proptest::sample::select(RESOURCES),
            subresource in proptest::sample::select(SUBRESOURCES),
        ) {
            let rule = PolicyRule {
                verbs: vec!["*".into()],
                api_groups: Some(vec!["*".into()]),
                resources: Some(patterns.iter().map(|p| (*p).to_owned()).collect()),
                ..Default::default()
            };
            let compiled = CompiledRule::new(&rule);
            let a = Attributes::resource(&NOBODY, "get", "", resource).on_subresource(subresource);
            let raw: Vec<Box<str>> = patterns.iter().map(|p| (*p).into()).collect();
            let literal = resource_matches(&raw, resource, subresource);
            prop_assert_eq!(compiled.allows(&a, &RequestProbe::new(&a)), literal);
        }
    }

    #[test]
    fn probes_compare_long_strings_fully() {
        let name = Name::new("configmaps-long-name");
        assert!(name.eq(&Probe::new("configmaps-long-name")));
        assert!(!name.eq(&Probe::new("configmaps-long-namf")));
        assert!(!name.eq(&Probe::new("configmaps")));
        assert!(Name::new("").eq(&Probe::new("")));
    }
}
