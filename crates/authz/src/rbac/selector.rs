//! Label selectors, for resolving `aggregationRule.clusterRoleSelectors`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::PolicyError;

/// Whether `selector` selects an object with `labels` (`metav1.LabelSelectorAsSelector`
/// semantics: an empty selector selects everything).
pub(crate) fn selects(
    role: &str,
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, PolicyError> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.as_deref().unwrap_or_default();
        let invalid = |why: &str| PolicyError::InvalidSelector {
            cluster_role: role.to_owned(),
            message: format!("{}: {why}", requirement.key),
        };
        let label = labels.get(&requirement.key);
        let matched = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(invalid("values must be non-empty for In and NotIn"));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(invalid("values must be empty for Exists and DoesNotExist"));
            }
            "In" => label.is_some_and(|l| values.contains(l)),
            "NotIn" => label.is_none_or(|l| !values.contains(l)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            other => {
                return Err(invalid(&format!(
                    "{other:?} is not a valid label selector operator"
                )));
            }
        };
        if !matched {
            return Ok(false);
        }
    }
    Ok(true)
}
