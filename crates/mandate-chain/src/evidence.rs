//! Evidence 1 of "who may present a subject token" (DESIGN.md section 5), on its own so that the
//! ID-JAG issuance (DESIGN.md section 7, IdP half) applies exactly the same rule.

/// Evidence 1: the upstream token's `aud` names the actor as the issuer knows it
/// (`actor_upstream_ids`); with several audiences, `azp` must be present, be one of them and name
/// the actor (OIDC Core §2). Returns the matching upstream id.
pub fn issued_to_actor(
    aud: &[String],
    azp: Option<&str>,
    actor_upstream_ids: &[String],
) -> Option<String> {
    match aud {
        [single] => actor_upstream_ids.iter().find(|id| *id == single).cloned(),
        [] => None,
        many => {
            let azp = azp?;
            actor_upstream_ids
                .iter()
                .find(|id| id.as_str() == azp && many.iter().any(|a| a == azp))
                .cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::issued_to_actor;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn a_single_audience_must_be_one_of_the_actor_ids() {
        let ids = strings(&["0oa1travel", "travel-agent"]);
        assert_eq!(
            issued_to_actor(&strings(&["0oa1travel"]), None, &ids),
            Some("0oa1travel".into())
        );
        assert_eq!(issued_to_actor(&strings(&["other"]), None, &ids), None);
        // azp does not rescue a single audience naming someone else.
        assert_eq!(
            issued_to_actor(&strings(&["other"]), Some("0oa1travel"), &ids),
            None
        );
        assert_eq!(issued_to_actor(&[], Some("0oa1travel"), &ids), None);
    }

    #[test]
    fn several_audiences_need_azp_naming_the_actor_among_them() {
        let ids = strings(&["agent"]);
        let aud = strings(&["agent", "other"]);
        assert_eq!(issued_to_actor(&aud, None, &ids), None);
        assert_eq!(
            issued_to_actor(&aud, Some("agent"), &ids),
            Some("agent".into())
        );
        assert_eq!(issued_to_actor(&aud, Some("other"), &ids), None);
        // azp must be one of the audiences too.
        let aud = strings(&["x", "other"]);
        assert_eq!(issued_to_actor(&aud, Some("agent"), &ids), None);
    }
}
