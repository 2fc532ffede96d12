//! Table and column names: Segment's snake_case, safe for every warehouse.
//!
//! [`sql_name`] turns any JSON key or event name into a name made only of
//! `a-z`, `0-9` and `_`:
//!
//! - a word boundary inside camelCase becomes `_`: before an upper-case
//!   letter that follows a lower-case letter or a digit (`firstName` →
//!   `first_name`, `md5Hash` → `md5_hash`), and before the last upper-case
//!   letter of an acronym that a lower-case letter follows (`HTTPServer` →
//!   `http_server`); an acronym at the end stays one word (`userID` →
//!   `user_id`, `URL` → `url`);
//! - everything but ASCII letters and digits (spaces, punctuation, non-ASCII
//!   letters, emoji) becomes `_`;
//! - runs of `_` collapse to one, leading and trailing `_` are trimmed, and
//!   letters are lower-cased;
//! - a name that starts with a digit gets a leading `_` (`3dSecure` →
//!   `_3d_secure`);
//! - the name is cut to [`MAX_NAME_LEN`] (63) bytes, PostgreSQL's identifier
//!   limit (longer names would be truncated silently by the server, and two
//!   long names could then land in one column without anyone noticing),
//!   and a `_` left at the end by the cut is trimmed;
//! - a name with no letter or digit at all (`"!!!"`, `"🎉"`, `""`) has no
//!   usable form: [`None`].
//!
//! The output can still be an SQL keyword (`order`, `select`, `user`): the
//! loader must quote every identifier.

/// PostgreSQL's limit on identifier length, in bytes (`NAMEDATALEN - 1`).
pub const MAX_NAME_LEN: usize = 63;

/// The tables of the schema itself, and the host's `discards`. A track
/// event whose name maps to one of these gets its own table with a leading
/// `_` instead (see [`event_table`]).
pub const FIXED_TABLES: [&str; 8] =
    ["aliases", "discards", "groups", "identifies", "pages", "screens", "tracks", "users"];

/// The warehouse form of `raw`: snake_case, `[a-z0-9_]`, at most 63 bytes;
/// [`None`] when nothing usable is left. See the [module docs](self).
pub fn sql_name(raw: &str) -> Option<String> {
    let chars: Vec<char> = raw.chars().collect();
    let mut spaced = String::with_capacity(raw.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                spaced.push('_');
            }
            spaced.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            spaced.push(c);
        } else {
            spaced.push('_');
        }
    }
    let mut name = String::with_capacity(spaced.len() + 1);
    for c in spaced.chars() {
        if c == '_' && (name.is_empty() || name.ends_with('_')) {
            continue;
        }
        name.push(c);
    }
    while name.ends_with('_') {
        name.pop();
    }
    if name.is_empty() {
        return None;
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    // Only ASCII is left, so any byte index is a character boundary.
    name.truncate(MAX_NAME_LEN);
    while name.ends_with('_') {
        name.pop();
    }
    Some(name)
}

/// The table for a track event called `event`: its [`sql_name`], with a
/// leading `_` when that is one of the [`FIXED_TABLES`] (an event named
/// `"Users"` goes to `_users`, never into `users`). [`None`] when the name
/// has no letter or digit.
pub fn event_table(event: &str) -> Option<String> {
    let name = sql_name(event)?;
    Some(if FIXED_TABLES.contains(&name.as_str()) { format!("_{name}") } else { name })
}
