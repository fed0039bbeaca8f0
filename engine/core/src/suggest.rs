//! "Did you mean" hints: one rule, on `strsim`'s metrics, for every suggestion the engine
//! makes, from unknown YAML keys to unknown expression functions.
//!
//! A candidate is plausible when it is close by Jaro-Winkler, which rewards a shared
//! prefix (`mem` → `memory`, `integer` → `int`), or within a few edits of the name (about
//! half its length: `nofunc` → `round`), as long as the two share at least one character
//! in place (`m` is not a typo of `n`). The most similar by Jaro-Winkler wins.

/// Jaro-Winkler similarity above which a candidate is plausible.
const MIN_SIMILARITY: f64 = 0.8;

/// Names longer than this are not typos of a known name (and would make the comparison
/// quadratic in hostile input).
const MAX_NAME_LEN: usize = 256;

/// Whether `candidate` is plausibly what `name` was meant to be, and how similar it is.
fn similarity(name: &str, candidate: &str) -> Option<f64> {
    let jw = strsim::jaro_winkler(name, candidate);
    if jw > MIN_SIMILARITY {
        return Some(jw);
    }
    let edits = strsim::levenshtein(name, candidate);
    let len = name.chars().count();
    let few = edits <= (len / 2).max(2);
    let related = edits < len.max(candidate.chars().count());
    (few && related).then_some(jw)
}

/// The candidate closest to `name`, if it is plausibly a typo of it.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= MAX_NAME_LEN)
        .filter_map(|c| similarity(name, c).map(|s| (s, c)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest of `candidates` to `name`.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_word_and_strangers_none() {
        assert_eq!(closest("lenn", ["len", "range", "join"]), Some("len"));
        assert_eq!(closest("mem", ["ranks", "threads", "memory"]), Some("memory"));
        assert_eq!(closest("integer", ["int", "float", "string"]), Some("int"));
        assert_eq!(closest("nofunc", ["range", "len", "round"]), Some("round"));
        assert_eq!(closest("m", ["n"]), None);
        assert_eq!(closest("xyz", ["len", "range"]), None);
        assert_eq!(did_you_mean("stpes", ["steps", "params"]).as_deref(), Some("did you mean `steps`?"));
        assert_eq!(closest(&"a".repeat(300), [&*"a".repeat(300)]), None);
    }
}
