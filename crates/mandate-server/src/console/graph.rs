//! A chain drawn as a graph: the tree of `GET /admin/chains/{id}` laid out as an indented tree
//! (each hop one row, one column per depth), so that any chain reads top to bottom on a laptop
//! screen however wide it branches. Pure: the template draws the boxes and links it places.

use serde_json::Value;

/// Width and height of one hop's box, and the gaps between rows and columns (SVG units, px).
pub const BOX_WIDTH: u32 = 360;
pub const BOX_HEIGHT: u32 = 76;
const ROW: u32 = BOX_HEIGHT + 18;
const INDENT: u32 = 48;
const MARGIN: u32 = 8;

/// One hop, placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedHop {
    /// The hop id.
    pub jti: String,
    /// The agent that requested it, and whom it acts through (current first).
    pub client_id: String,
    /// The actor chain, current first.
    pub actors: String,
    /// Its audience.
    pub audience: String,
    /// Its scopes, `audience: scopes` per audience.
    pub scopes: String,
    /// `live`, `revoked` or `expired`.
    pub status: String,
    /// The consent evidence: its kind and reference.
    pub evidence: String,
    /// Top-left corner.
    pub x: u32,
    /// Top-left corner.
    pub y: u32,
    /// The link from its parent, or none for a root.
    pub link: Option<Link>,
    /// Whether it is dead: revoked itself, or below a revoked hop.
    pub dead: bool,
}

/// A link from a parent's box down and across to its child's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Start, under the parent's box.
    pub x1: u32,
    /// Start.
    pub y1: u32,
    /// End, at the child's left edge.
    pub x2: u32,
    /// End.
    pub y2: u32,
}

/// The placed hops and the drawing's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Every hop, in drawing order (depth first).
    pub hops: Vec<PlacedHop>,
    /// The SVG's width.
    pub width: u32,
    /// The SVG's height.
    pub height: u32,
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn scopes(hop: &Value) -> String {
    hop["authority"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .map(|pair| {
                    let scopes: Vec<&str> = pair["scopes"]
                        .as_array()
                        .map(|s| s.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    scopes.join(" ")
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// Lays out the tree `document` (`{"roots": [hop…]}`, each hop with `children`).
pub fn layout(document: &Value) -> Layout {
    let mut out = Layout::default();
    let roots = document["roots"].as_array().cloned().unwrap_or_default();
    for root in &roots {
        place(root, 0, None, false, &mut out);
    }
    out.width = out
        .hops
        .iter()
        .map(|h| h.x + BOX_WIDTH + MARGIN)
        .max()
        .unwrap_or(0);
    out.height = out
        .hops
        .iter()
        .map(|h| h.y + BOX_HEIGHT + MARGIN)
        .max()
        .unwrap_or(0);
    out
}

fn place(hop: &Value, depth: u32, parent: Option<(u32, u32)>, dead_above: bool, out: &mut Layout) {
    let x = MARGIN + depth * INDENT;
    let y = MARGIN + u32::try_from(out.hops.len()).unwrap_or(u32::MAX / ROW) * ROW;
    let status = text(hop, "status");
    let dead = dead_above || status == "revoked";
    let evidence = format!(
        "{} {}",
        text(&hop["evidence"], "kind"),
        text(&hop["evidence"], "reference")
    );
    let actors = hop["actors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ← ")
        })
        .unwrap_or_default();
    // The link leaves the parent's box on its left edge, a little in, and enters this box
    // from the left at mid-height.
    let link = parent.map(|(px, py)| Link {
        x1: px + INDENT / 2,
        y1: py + BOX_HEIGHT,
        x2: x,
        y2: y + BOX_HEIGHT / 2,
    });
    out.hops.push(PlacedHop {
        jti: text(hop, "jti"),
        client_id: text(hop, "client_id"),
        actors,
        audience: text(hop, "audience"),
        scopes: scopes(hop),
        status,
        evidence: evidence.trim().to_owned(),
        x,
        y,
        link,
        dead,
    });
    for child in hop["children"].as_array().into_iter().flatten() {
        place(child, depth + 1, Some((x, y)), dead, out);
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    fn hop(jti: &str, status: &str, children: Vec<Value>) -> Value {
        json!({
            "jti": jti, "status": status, "client_id": "assistant", "actors": ["booking", "assistant"],
            "audience": "https://calendar.example", "evidence": {"kind": "id_token", "reference": "r1"},
            "authority": [{"audience": "https://calendar.example", "scopes": ["calendar.read", "calendar.write"]}],
            "children": children,
        })
    }

    #[test]
    fn each_hop_is_a_row_indented_by_depth_and_linked_to_its_parent() {
        let tree = json!({"roots": [hop("r", "live", vec![
            hop("a", "revoked", vec![hop("a1", "live", vec![])]),
            hop("b", "live", vec![]),
        ])]});
        let layout = layout(&tree);
        let ids: Vec<&str> = layout.hops.iter().map(|h| h.jti.as_str()).collect();
        assert_eq!(ids, ["r", "a", "a1", "b"], "depth first");
        let rows: Vec<u32> = layout.hops.iter().map(|h| h.y).collect();
        assert!(rows.windows(2).all(|w| w[1] == w[0] + ROW), "one row each");
        assert_eq!(layout.hops[2].x, layout.hops[0].x + 2 * INDENT);
        assert_eq!(layout.hops[0].link, None);
        let link = layout.hops[3].link.unwrap_or_default();
        assert_eq!(
            (link.y1, link.x2, link.y2),
            (
                layout.hops[0].y + BOX_HEIGHT,
                layout.hops[3].x,
                layout.hops[3].y + BOX_HEIGHT / 2
            )
        );
        assert_eq!(layout.height, layout.hops[3].y + BOX_HEIGHT + MARGIN);
        assert_eq!(layout.hops[0].actors, "booking ← assistant");
        assert_eq!(layout.hops[0].scopes, "calendar.read calendar.write");
        assert_eq!(layout.hops[0].evidence, "id_token r1");
    }

    #[test]
    fn a_revoked_hop_and_everything_below_it_are_dead() {
        let tree = json!({"roots": [hop("r", "live", vec![
            hop("a", "revoked", vec![hop("a1", "live", vec![])]),
            hop("b", "expired", vec![]),
        ])]});
        let dead: Vec<bool> = layout(&tree).hops.iter().map(|h| h.dead).collect();
        assert_eq!(dead, [false, true, true, false]);
    }
}
