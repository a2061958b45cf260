//! Decisions and the authorizer chain (kube-apiserver's union authorizer).

use std::borrow::Cow;

use crate::Attributes;
use crate::text::aggregate;

/// The three answers of a Kubernetes authorizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The request is allowed; a chain stops here.
    Allow,
    /// The request is denied; a chain stops here.
    Deny,
    /// This authorizer has no opinion; a chain asks the next one.
    NoOpinion,
}

/// An authorizer's answer: verdict, reason, and (rarely) an evaluation error.
///
/// The reason borrows from the authorizer when it can (RBAC's allow reasons are precomputed),
/// so an allow decision allocates nothing. When the verdict is not `Allow` and `error` is set,
/// kube-apiserver answers 500 instead of 403.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Allow, Deny or NoOpinion.
    pub verdict: Verdict,
    /// Why; appended to the 403 message as `": <reason>"` when non-empty.
    pub reason: Cow<'a, str>,
    /// An evaluation error (kube-apiserver: not allowed + error → 500 Internal Server Error).
    pub error: Option<String>,
}

impl<'a> Decision<'a> {
    /// Allow with a reason.
    pub fn allow(reason: impl Into<Cow<'a, str>>) -> Self {
        Self {
            verdict: Verdict::Allow,
            reason: reason.into(),
            error: None,
        }
    }

    /// Deny with a reason.
    pub fn deny(reason: impl Into<Cow<'a, str>>) -> Self {
        Self {
            verdict: Verdict::Deny,
            reason: reason.into(),
            error: None,
        }
    }

    /// No opinion, with a reason (may be empty).
    pub fn no_opinion(reason: impl Into<Cow<'a, str>>) -> Self {
        Self {
            verdict: Verdict::NoOpinion,
            reason: reason.into(),
            error: None,
        }
    }

    /// The same decision carrying an evaluation error.
    pub fn with_error(self, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..self
        }
    }

    /// Whether the verdict is `Allow`.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The same decision owning its reason.
    pub fn into_owned(self) -> Decision<'static> {
        Decision {
            verdict: self.verdict,
            reason: Cow::Owned(self.reason.into_owned()),
            error: self.error,
        }
    }
}

/// Something that decides on [`Attributes`] — kube-apiserver's `authorizer.Authorizer`.
/// Implement it to plug your own policy into a [`Chain`].
pub trait Authorizer {
    /// Decide. Must not panic on any input.
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s>;
}

impl<A: Authorizer + ?Sized> Authorizer for &A {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        (**self).authorize(attributes)
    }
}

impl<A: Authorizer + ?Sized> Authorizer for Box<A> {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        (**self).authorize(attributes)
    }
}

impl<A: Authorizer + ?Sized> Authorizer for std::sync::Arc<A> {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        (**self).authorize(attributes)
    }
}

/// kube-apiserver's privileged-group authorizer: members of `system:masters` are allowed
/// everything (reason `""`); everyone else gets no opinion. Put it first in a [`Chain`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Superuser;

impl Authorizer for Superuser {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        if attributes.user.is_superuser() {
            Decision::allow("")
        } else {
            Decision::no_opinion("")
        }
    }
}

type DynAuthorizer = Box<dyn Authorizer + Send + Sync>;

/// The union authorizer: ask each authorizer in order; the first `Allow` **or `Deny`** wins
/// with that authorizer's reason and error; if all have no opinion, the result is `NoOpinion`
/// with the non-empty reasons joined by `"\n"` and the errors aggregated (Go's
/// `utilerrors.NewAggregate` format).
///
/// Authorizers added with [`Chain::with_named`] have their reasons prefixed with
/// `"<name>: "`, as the newest kube-apiserver does.
#[derive(Default)]
pub struct Chain {
    authorizers: Vec<(Option<String>, DynAuthorizer)>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("len", &self.authorizers.len())
            .finish()
    }
}

impl Chain {
    /// An empty chain (answers `NoOpinion`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Append an authorizer.
    pub fn with(mut self, authorizer: impl Authorizer + Send + Sync + 'static) -> Self {
        self.authorizers.push((None, Box::new(authorizer)));
        self
    }

    /// Append an authorizer whose reasons are prefixed with `"<name>: "`.
    pub fn with_named(
        mut self,
        name: impl Into<String>,
        authorizer: impl Authorizer + Send + Sync + 'static,
    ) -> Self {
        self.authorizers
            .push((Some(name.into()), Box::new(authorizer)));
        self
    }

    /// Number of authorizers in the chain.
    pub fn len(&self) -> usize {
        self.authorizers.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.authorizers.is_empty()
    }
}

fn prefixed<'s>(name: Option<&String>, reason: Cow<'s, str>) -> Cow<'s, str> {
    match name {
        Some(name) if !reason.is_empty() => Cow::Owned(format!("{name}: {reason}")),
        _ => reason,
    }
}

impl Authorizer for Chain {
    fn authorize<'s>(&'s self, attributes: &Attributes<'_>) -> Decision<'s> {
        // Allocation-free until a second authorizer has something to say.
        let mut reasons: Vec<Cow<'s, str>> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for (name, authorizer) in &self.authorizers {
            let decision = authorizer.authorize(attributes);
            match decision.verdict {
                Verdict::Allow | Verdict::Deny => {
                    return Decision {
                        verdict: decision.verdict,
                        reason: prefixed(name.as_ref(), decision.reason),
                        error: decision.error,
                    };
                }
                Verdict::NoOpinion => {
                    if let Some(error) = decision.error {
                        errors.push(error);
                    }
                    if !decision.reason.is_empty() {
                        reasons.push(prefixed(name.as_ref(), decision.reason));
                    }
                }
            }
        }
        let reason = match reasons.len() {
            0 => Cow::Borrowed(""),
            1 => reasons.swap_remove(0),
            _ => Cow::Owned(reasons.join("\n")),
        };
        Decision {
            verdict: Verdict::NoOpinion,
            reason,
            error: if errors.is_empty() {
                None
            } else {
                Some(aggregate(errors.iter().map(String::as_str)))
            },
        }
    }
}
