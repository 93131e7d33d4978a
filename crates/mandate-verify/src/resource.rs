//! RFC 9728 protected resource metadata: the document an app publishes so that clients (MCP
//! clients among them) find the authorization server its tokens come from, and the URL its
//! `WWW-Authenticate` challenges name.

use serde_json::{json, Value};

/// The well-known path (RFC 9728 §3): the metadata of a resource identifier with a path lives at
/// this path followed by the identifier's path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// An app's protected resource metadata.
///
/// ```
/// use mandate_verify::ProtectedResource;
///
/// let metadata = ProtectedResource::new("https://calendar.example.com/mcp", "https://mandate.example.com")
///     .scopes(["calendar.read", "calendar.write"]);
/// assert_eq!(metadata.path(), "/.well-known/oauth-protected-resource/mcp");
/// assert_eq!(metadata.url(), "https://calendar.example.com/.well-known/oauth-protected-resource/mcp");
/// assert_eq!(metadata.document()["authorization_servers"][0], "https://mandate.example.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    scopes: Vec<String>,
    name: Option<String>,
    /// Derived from `resource` once, since every challenge names the URL.
    path: String,
    url: String,
    origin: String,
}

impl ProtectedResource {
    /// The metadata of `resource` (the app's resource identifier, an `https` URL without query
    /// or fragment; for a mandate app, the audience it is registered with) whose tokens come from
    /// the authorization server `issuer`.
    pub fn new(resource: &str, issuer: &str) -> Self {
        let (path, url, origin) = match url::Url::parse(resource) {
            Ok(parsed) => {
                let path = format!("{WELL_KNOWN}{}", parsed.path().trim_end_matches('/'));
                let origin = parsed.origin().ascii_serialization();
                let url = format!("{origin}{path}");
                (path, url, origin)
            }
            Err(_) => (
                WELL_KNOWN.to_owned(),
                format!("{}{WELL_KNOWN}", resource.trim_end_matches('/')),
                resource.trim_end_matches('/').to_owned(),
            ),
        };
        Self {
            resource: resource.to_owned(),
            authorization_servers: vec![issuer.to_owned()],
            scopes: Vec::new(),
            name: None,
            path,
            url,
            origin,
        }
    }

    /// The scopes the app understands (`scopes_supported`).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// A human-readable name (`resource_name`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path the document is served at: [`WELL_KNOWN`] and the identifier's path (§3.1).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The document's URL: the identifier's origin and [`path`](Self::path). This is the
    /// `resource_metadata` of the app's challenges (§5.1).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The identifier's origin (`https://calendar.example.com`): what a request's URL is made of
    /// when a DPoP proof's `htu` is checked behind a proxy.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The JSON document (§2): `resource`, `authorization_servers`, `bearer_methods_supported`
    /// (`header`: mandate-verify reads no other), `dpop_signing_alg_values_supported` (RFC 9449
    /// proofs it accepts), and `scopes_supported` and `resource_name` when set.
    pub fn document(&self) -> Value {
        let mut document = json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": crate::dpop::DPOP_ALGORITHMS
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>(),
        });
        if !self.scopes.is_empty() {
            document["scopes_supported"] = json!(self.scopes);
        }
        if let Some(name) = &self.name {
            document["resource_name"] = json!(name);
        }
        document
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_without_a_path_is_served_at_the_well_known_path() {
        let metadata = ProtectedResource::new("https://app.example:8443", "https://as.example");
        assert_eq!(metadata.path(), WELL_KNOWN);
        assert_eq!(
            metadata.url(),
            "https://app.example:8443/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata.document(),
            json!({"resource": "https://app.example:8443",
                "authorization_servers": ["https://as.example"],
                "bearer_methods_supported": ["header"],
                "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"]})
        );
    }

    #[test]
    fn scopes_and_name_are_published_when_set() {
        let document = ProtectedResource::new("https://app.example/api/", "https://as.example")
            .scopes(["a", "b"])
            .name("App")
            .document();
        assert_eq!(document["scopes_supported"], json!(["a", "b"]));
        assert_eq!(document["resource_name"], "App");
    }
}
