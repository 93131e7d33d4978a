//! Which route a request path belongs to: the longest configured prefix that ends on a path
//! segment boundary.

/// A protected route: requests under `prefix` need a mandate token for `audience`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path prefix (`/` for everything, `/calendar` for `/calendar` and `/calendar/…`).
    pub prefix: String,
    /// The audience tokens must name (the app's identifier at mandate).
    pub audience: String,
    /// Scopes every request must carry (all of them).
    pub scopes: Vec<String>,
    /// The RFC 9728 resource identifier of the app (by default the audience).
    pub resource: String,
    /// Where proxy mode sends the request (`http://host:port`, no path).
    pub upstream: Option<String>,
}

/// Whether `path` lies under `prefix`: equal to it, or continuing it with a new segment, so that
/// `/cal` does not cover `/calendar`.
pub fn covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// The item whose prefix (`prefix_of`) is the longest covering `path`; a query in `path` is
/// ignored.
pub fn pick<'a, T>(items: &'a [T], path: &str, prefix_of: impl Fn(&T) -> &str) -> Option<&'a T> {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    items
        .iter()
        .filter(|item| covers(prefix_of(item), path))
        .max_by_key(|item| prefix_of(item).trim_end_matches('/').len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            audience: format!("https://app.example{prefix}"),
            scopes: vec![],
            resource: format!("https://app.example{prefix}"),
            upstream: None,
        }
    }

    #[test]
    fn a_prefix_covers_whole_segments_only() {
        assert!(covers("/cal", "/cal"));
        assert!(covers("/cal", "/cal/events"));
        assert!(covers("/cal/", "/cal/events"));
        assert!(covers("/", "/anything"));
        assert!(!covers("/cal", "/calendar"));
        assert!(!covers("/cal", "/"));
    }

    #[test]
    fn the_longest_prefix_wins_and_the_query_is_ignored() {
        let routes = [route("/"), route("/cal"), route("/cal/admin")];
        let prefix = |path: &str, routes: &[Route]| {
            pick(routes, path, |r| r.prefix.as_str()).map(|r| r.prefix.clone())
        };
        assert_eq!(prefix("/cal/admin/x", &routes).unwrap(), "/cal/admin");
        assert_eq!(prefix("/cal/events?q=/cal/admin", &routes).unwrap(), "/cal");
        assert_eq!(prefix("/mail", &routes).unwrap(), "/");
        assert_eq!(prefix("/mail", &routes[1..]), None);
    }
}
