//! The search box's little language: words (all must match), `"quoted phrases"`, and `prefix*` words; nothing else is special.
//!
//! Field syntax, boolean operators and fuzziness are deliberately absent: a user's query can only
//! ever name message text, so it cannot reach around the conversation filter or into other fields.

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = schemas::MAX_SEARCH_QUERY_CHARS;
/// Most words, phrases and prefixes in one query.
const MAX_CLAUSES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// Must appear (as analysed terms; a word that analyses to several terms must appear as that phrase).
    Word(String),
    /// Must appear in this order, adjacent.
    Phrase(String),
    /// Some term starting with this must appear.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryTextError {
    #[error("the query is empty")]
    Empty,
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    #[error("the query has more than {MAX_CLAUSES} words")]
    TooManyClauses,
    #[error("a prefix needs at least one letter or digit before the *")]
    BarePrefix,
}

/// Splits a query into clauses; an unclosed quote runs to the end of the query.
pub fn parse_query_text(query: &str) -> Result<Vec<Clause>, QueryTextError> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(QueryTextError::TooLong);
    }
    let mut clauses = Vec::new();
    let mut rest = query.trim();
    while !rest.is_empty() {
        if let Some(after_quote) = rest.strip_prefix('"') {
            let (phrase, remainder) = after_quote.split_once('"').unwrap_or((after_quote, ""));
            if !phrase.trim().is_empty() {
                clauses.push(Clause::Phrase(phrase.trim().to_owned()));
            }
            rest = remainder.trim_start();
            continue;
        }
        let word_end = rest.find(|character: char| character.is_whitespace() || character == '"').unwrap_or(rest.len());
        let word = &rest[..word_end];
        rest = rest[word_end..].trim_start();
        match word.strip_suffix('*') {
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('*');
                if !prefix.chars().any(char::is_alphanumeric) {
                    return Err(QueryTextError::BarePrefix);
                }
                clauses.push(Clause::Prefix(prefix.to_owned()));
            }
            None => clauses.push(Clause::Word(word.to_owned())),
        }
    }
    if clauses.is_empty() {
        return Err(QueryTextError::Empty);
    }
    if clauses.len() > MAX_CLAUSES {
        return Err(QueryTextError::TooManyClauses);
    }
    Ok(clauses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, expected: Result<Vec<Clause>, QueryTextError>) {
        assert_eq!(parse_query_text(query), expected, "query {query:?}");
    }

    fn word(text: &str) -> Clause {
        Clause::Word(text.to_owned())
    }

    #[test]
    fn words_phrases_and_prefixes() {
        check("hello world", Ok(vec![word("hello"), word("world")]));
        check("  Grüße  ", Ok(vec![word("Grüße")]));
        check(r#"say "big red dog" now"#, Ok(vec![word("say"), Clause::Phrase("big red dog".to_owned()), word("now")]));
        check(r#""unclosed phrase"#, Ok(vec![Clause::Phrase("unclosed phrase".to_owned())]));
        check("meet* e-mail", Ok(vec![Clause::Prefix("meet".to_owned()), word("e-mail")]));
        check("münch**", Ok(vec![Clause::Prefix("münch".to_owned())]));
        check(r#"a"b""#, Ok(vec![word("a"), Clause::Phrase("b".to_owned())]));
        check(r#"conversation:g-1 OR *"#, Err(QueryTextError::BarePrefix));
    }

    #[test]
    fn refusals() {
        check("", Err(QueryTextError::Empty));
        check(r#"   "" "#, Err(QueryTextError::Empty));
        check("*", Err(QueryTextError::BarePrefix));
        check("-*", Err(QueryTextError::BarePrefix));
        check(&"a".repeat(MAX_QUERY_CHARS + 1), Err(QueryTextError::TooLong));
        check(&"a ".repeat(MAX_CLAUSES + 1), Err(QueryTextError::TooManyClauses));
    }
}
