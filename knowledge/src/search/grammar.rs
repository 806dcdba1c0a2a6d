//! The search language, parsed into a tree before anything touches the
//! index: words, `"phrases"`, `prefix*`, `field:value`, `AND` (implied
//! between terms), `OR`, `NOT` and `-term`, and parentheses.
//!
//! ```text
//! query   = or
//! or      = and { "OR" and }
//! and     = unary { [ "AND" ] unary }
//! unary   = ( "NOT" | "-" ) unary | primary
//! primary = "(" or ")" | [ field ":" ] value
//! value   = word | '"' phrase '"' | prefix "*"
//! ```
//!
//! `AND` binds tighter than `OR`; `OR`, `AND` and `NOT` are operators only
//! in capitals (lower case they are words). Every error names the column
//! (1-based, in characters) where the problem is.

use std::fmt;

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// How deeply parentheses and `NOT`s may nest.
pub const MAX_DEPTH: usize = 32;

/// A field a term is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No field: the title, the body (labels, annotations, steps,
    /// evidence, tags), the root cause and the resolution.
    Any,
    /// `title:`
    Title,
    /// `root_cause:`
    RootCause,
    /// `resolution:`
    Resolution,
    /// `labels:` — the words of the alerts' label names and values.
    Labels,
    /// `annotations:` — the words of the alerts' annotations.
    Annotations,
    /// `evidence:` — hot functions of captured profiles, goroutine groups
    /// and the other evidence summaries.
    Evidence,
    /// `service:NAME` (exact)
    Service,
    /// `runbook:NAME` (exact)
    Runbook,
    /// `status:resolved` (exact)
    Status,
    /// `label:key=value` (exact)
    Label,
    /// `tag:redis` (exact)
    Tag,
    /// `chaos:EXPERIMENT` (exact)
    Chaos,
    /// `commit:SHA` (a prefix of 7 or more hex digits)
    Commit,
    /// `since:7d`
    Since,
    /// `after:2025-04-01` (inclusive; a date or RFC 3339)
    After,
    /// `before:2025-07-01` (exclusive; a date or RFC 3339)
    Before,
}

impl Scope {
    /// Every field name, as written in a query.
    pub const NAMES: &'static [(&'static str, Scope)] = &[
        ("title", Scope::Title),
        ("root_cause", Scope::RootCause),
        ("resolution", Scope::Resolution),
        ("labels", Scope::Labels),
        ("annotations", Scope::Annotations),
        ("evidence", Scope::Evidence),
        ("service", Scope::Service),
        ("runbook", Scope::Runbook),
        ("status", Scope::Status),
        ("label", Scope::Label),
        ("tag", Scope::Tag),
        ("chaos", Scope::Chaos),
        ("commit", Scope::Commit),
        ("since", Scope::Since),
        ("after", Scope::After),
        ("before", Scope::Before),
    ];

    fn named(name: &str) -> Option<Scope> {
        Scope::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    /// Whether the field is searched by words (and ranks), rather than
    /// compared exactly or as a time.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Scope::Any
                | Scope::Title
                | Scope::RootCause
                | Scope::Resolution
                | Scope::Labels
                | Scope::Annotations
                | Scope::Evidence
        )
    }
}

/// What a term asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A word (a text field may split it into several, as a phrase).
    Word(String),
    /// `"several words in order"`.
    Phrase(String),
    /// `prefix*`: letters and digits.
    Prefix(String),
}

/// One term: a value, in a field, at a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field.
    pub scope: Scope,
    /// The value.
    pub value: Value,
    /// Where it starts (1-based).
    pub column: usize,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Every child must match.
    And(Vec<Node>),
    /// At least one child must match.
    Or(Vec<Node>),
    /// The child must not match.
    Not(Box<Node>),
    /// A term.
    Term(Term),
}

/// A query that does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// 1-based, in characters.
    pub column: usize,
    /// What is wrong and how to write it instead.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for QueryError {}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError {
        column,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Or,
    And,
    Not,
    /// A term, `-` in front already taken off as a `Not`.
    Term(Term),
}

/// Parses a query. An empty query (only spaces) is `None`: it matches
/// nothing, as before.
pub fn parse(q: &str) -> Result<Option<Node>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    if chars.len() > MAX_QUERY_CHARS {
        return err(
            MAX_QUERY_CHARS + 1,
            format!("the query is longer than {MAX_QUERY_CHARS} characters"),
        );
    }
    let toks = lex(&chars)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks: &toks,
        at: 0,
        end: chars.len() + 1,
    };
    let node = p.or(0)?;
    if let Some((col, t)) = p.peek() {
        return match t {
            Tok::Close => err(col, "')' without a matching '('"),
            _ => err(col, "unexpected here"),
        };
    }
    Ok(Some(node))
}

fn is_term_char(c: char) -> bool {
    !c.is_whitespace() && c != '(' && c != ')' && c != '"'
}

fn lex(chars: &[char]) -> Result<Vec<(usize, Tok)>, QueryError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push((col, Tok::Open));
            i += 1;
        } else if c == ')' {
            out.push((col, Tok::Close));
            i += 1;
        } else if c == '-'
            && chars
                .get(i + 1)
                .is_some_and(|&n| is_term_char(n) || n == '"' || n == '(')
        {
            // `-term` and `-(group)`: NOT. A lone `-` is a word below.
            out.push((col, Tok::Not));
            i += 1;
        } else {
            let (tok, next) = term(chars, i)?;
            out.push((col, tok));
            i = next;
        }
    }
    Ok(out)
}

/// Reads one term starting at `i`: `"phrase"`, `field:"phrase"`,
/// `field:value`, `word`, `prefix*`, or an operator word.
fn term(chars: &[char], i: usize) -> Result<(Tok, usize), QueryError> {
    let col = i + 1;
    if chars[i] == '"' {
        let (phrase, next) = phrase(chars, i)?;
        return Ok((
            Tok::Term(Term {
                scope: Scope::Any,
                value: Value::Phrase(phrase),
                column: col,
            }),
            next,
        ));
    }
    let mut j = i;
    while j < chars.len() && is_term_char(chars[j]) && chars[j] != ':' {
        j += 1;
    }
    let head: String = chars[i..j].iter().collect();
    if j == chars.len() || chars[j] != ':' {
        // A bare word (or an operator).
        let tok = match head.as_str() {
            "OR" => Tok::Or,
            "AND" => Tok::And,
            "NOT" => Tok::Not,
            _ => Tok::Term(Term {
                scope: Scope::Any,
                value: word_or_prefix(&head, col)?,
                column: col,
            }),
        };
        return Ok((tok, j));
    }
    // `head:` — a field, or a word with a colon in it (`10.0.0.7:6060`).
    let looks_like_field =
        !head.is_empty() && head.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    let Some(scope) = Scope::named(&head) else {
        if looks_like_field {
            let known: Vec<&str> = Scope::NAMES.iter().map(|(n, _)| *n).collect();
            return err(
                col,
                format!(
                    "unknown field {head:?} (fields: {}); put the words in quotes to search for them",
                    known.join(", ")
                ),
            );
        }
        // Not a field name: the whole run is one word.
        let mut k = j;
        while k < chars.len() && is_term_char(chars[k]) {
            k += 1;
        }
        let word: String = chars[i..k].iter().collect();
        return Ok((
            Tok::Term(Term {
                scope: Scope::Any,
                value: word_or_prefix(&word, col)?,
                column: col,
            }),
            k,
        ));
    };
    let vstart = j + 1;
    let vcol = vstart + 1;
    if vstart < chars.len() && chars[vstart] == '"' {
        let (p, next) = phrase(chars, vstart)?;
        return Ok((
            Tok::Term(Term {
                scope,
                value: Value::Phrase(p),
                column: col,
            }),
            next,
        ));
    }
    if vstart < chars.len() && chars[vstart] == '(' {
        return err(
            vcol,
            format!("{head}: takes one value; write ({head}:a OR {head}:b)"),
        );
    }
    let mut k = vstart;
    while k < chars.len() && is_term_char(chars[k]) {
        k += 1;
    }
    let value: String = chars[vstart..k].iter().collect();
    if value.is_empty() {
        return err(vcol, format!("{head}: needs a value after the colon"));
    }
    let value = if scope.is_text() {
        word_or_prefix(&value, vcol)?
    } else {
        Value::Word(value)
    };
    Ok((
        Tok::Term(Term {
            scope,
            value,
            column: col,
        }),
        k,
    ))
}

/// `"..."` starting at the quote `i`; returns the text and the index after
/// the closing quote.
fn phrase(chars: &[char], i: usize) -> Result<(String, usize), QueryError> {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != '"' {
        j += 1;
    }
    if j == chars.len() {
        return err(i + 1, "this quote is never closed");
    }
    let text: String = chars[i + 1..j].iter().collect();
    if text.trim().is_empty() {
        return err(i + 1, "an empty phrase");
    }
    Ok((text, j + 1))
}

fn word_or_prefix(w: &str, col: usize) -> Result<Value, QueryError> {
    match w.strip_suffix('*') {
        Some(p) => {
            if p.is_empty() || !p.chars().all(char::is_alphanumeric) {
                return err(
                    col,
                    format!("{w}: a prefix is letters and digits followed by *"),
                );
            }
            Ok(Value::Prefix(p.to_lowercase()))
        }
        None => Ok(Value::Word(w.to_string())),
    }
}

struct Parser<'a> {
    toks: &'a [(usize, Tok)],
    at: usize,
    /// The column just past the end, for "needs something after".
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<(usize, &Tok)> {
        self.toks.get(self.at).map(|(c, t)| (*c, t))
    }

    fn depth_check(&self, depth: usize) -> Result<(), QueryError> {
        if depth > MAX_DEPTH {
            let col = self.peek().map_or(self.end, |(c, _)| c);
            return err(col, format!("nested more than {MAX_DEPTH} levels deep"));
        }
        Ok(())
    }

    fn or(&mut self, depth: usize) -> Result<Node, QueryError> {
        self.depth_check(depth)?;
        let mut items = vec![self.and(depth)?];
        while let Some((col, Tok::Or)) = self.peek() {
            self.at += 1;
            if !self.starts_operand() {
                return err(col, "OR needs a term after it");
            }
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::Or(items)
        })
    }

    fn starts_operand(&self) -> bool {
        matches!(self.peek(), Some((_, Tok::Open | Tok::Not | Tok::Term(_))))
    }

    fn and(&mut self, depth: usize) -> Result<Node, QueryError> {
        let mut items = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some((col, Tok::And)) => {
                    self.at += 1;
                    if !self.starts_operand() {
                        return err(col, "AND needs a term after it");
                    }
                    items.push(self.unary(depth)?);
                }
                Some((_, Tok::Open | Tok::Not | Tok::Term(_))) => items.push(self.unary(depth)?),
                _ => break,
            }
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, QueryError> {
        self.depth_check(depth)?;
        match self.peek() {
            Some((col, Tok::Not)) => {
                self.at += 1;
                if !self.starts_operand() {
                    return err(col, "NOT needs a term after it");
                }
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some((col, Tok::Open)) => {
                self.at += 1;
                if matches!(self.peek(), Some((_, Tok::Close))) {
                    return err(col, "empty parentheses");
                }
                if self.peek().is_none() {
                    return err(col, "'(' is never closed");
                }
                let inner = self.or(depth + 1)?;
                match self.peek() {
                    Some((_, Tok::Close)) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => err(col, "'(' is never closed"),
                }
            }
            Some((_, Tok::Term(t))) => {
                let t = t.clone();
                self.at += 1;
                Ok(Node::Term(t))
            }
            Some((col, Tok::Or)) => err(col, "OR needs a term before it"),
            Some((col, Tok::And)) => err(col, "AND needs a term before it"),
            Some((col, Tok::Close)) => err(col, "')' without a matching '('"),
            None => err(self.end, "the query ends too early"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(s: &str, column: usize) -> Node {
        Node::Term(Term {
            scope: Scope::Any,
            value: Value::Word(s.into()),
            column,
        })
    }

    fn p(q: &str) -> Node {
        parse(q).unwrap().unwrap()
    }

    fn e(q: &str) -> QueryError {
        parse(q).unwrap_err()
    }

    #[test]
    fn words_and_is_implied_and_binds_tighter_than_or() {
        assert_eq!(
            p("redis failover"),
            Node::And(vec![word("redis", 1), word("failover", 7)])
        );
        assert_eq!(
            p("a b OR c"),
            Node::Or(vec![
                Node::And(vec![word("a", 1), word("b", 3)]),
                word("c", 8)
            ])
        );
        assert_eq!(
            p("a AND (b OR c)"),
            Node::And(vec![
                word("a", 1),
                Node::Or(vec![word("b", 8), word("c", 13)])
            ])
        );
        // Lower case, they are words.
        assert_eq!(p("or"), word("or", 1));
    }

    #[test]
    fn not_and_minus() {
        assert_eq!(
            p("timeouts NOT dns"),
            Node::And(vec![
                word("timeouts", 1),
                Node::Not(Box::new(word("dns", 14)))
            ])
        );
        assert_eq!(
            p("timeouts -dns"),
            Node::And(vec![
                word("timeouts", 1),
                Node::Not(Box::new(word("dns", 11)))
            ])
        );
        // A lone dash, and a dash inside a word, are words.
        assert_eq!(
            p("a - b"),
            Node::And(vec![word("a", 1), word("-", 3), word("b", 5)])
        );
        assert_eq!(p("e2e-test"), word("e2e-test", 1));
    }

    #[test]
    fn fields_phrases_and_prefixes() {
        assert_eq!(
            p(r#"title:"disk full" redi* root_cause:dns"#),
            Node::And(vec![
                Node::Term(Term {
                    scope: Scope::Title,
                    value: Value::Phrase("disk full".into()),
                    column: 1
                }),
                Node::Term(Term {
                    scope: Scope::Any,
                    value: Value::Prefix("redi".into()),
                    column: 19
                }),
                Node::Term(Term {
                    scope: Scope::RootCause,
                    value: Value::Word("dns".into()),
                    column: 25
                }),
            ])
        );
        // Not a field name: one word.
        assert_eq!(p("10.0.0.7:6060"), word("10.0.0.7:6060", 1));
        // Exact fields keep the value as written, `*` included.
        assert_eq!(
            p("label:severity=critical"),
            Node::Term(Term {
                scope: Scope::Label,
                value: Value::Word("severity=critical".into()),
                column: 1
            })
        );
    }

    #[test]
    fn errors_name_the_column() {
        assert_eq!(e("a OR").column, 3);
        assert_eq!(e("OR a").column, 1);
        assert_eq!(e("(a b").column, 1);
        assert_eq!(e("a b)").column, 4);
        assert_eq!(e("a ()").column, 3);
        assert_eq!(e(r#"x "open"#).column, 3);
        assert_eq!(e("x nosuch:y").column, 3);
        assert!(e("x nosuch:y").message.contains("unknown field \"nosuch\""));
        assert_eq!(e("title:").column, 7);
        assert_eq!(e("service:(a OR b)").column, 9);
        assert_eq!(e("a NOT").column, 3);
        assert_eq!(e("x *").column, 3);
        assert_eq!(e("x a.b*").column, 3);
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(e(&deep).message.contains("nested"));
        let long = "a ".repeat(MAX_QUERY_CHARS);
        assert!(e(&long).message.contains("longer"));
        assert_eq!(parse("   ").unwrap(), None);
    }

    /// Every query docs/KNOWLEDGE.md shows parses, and the error it quotes
    /// is the one given.
    #[test]
    fn the_documented_queries_parse() {
        let doc = include_str!("../../../docs/KNOWLEDGE.md");
        let block = doc
            .split("```query\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/KNOWLEDGE.md has a ```query block");
        let mut n = 0;
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            assert!(parse(line).unwrap().is_some(), "{line}");
            n += 1;
        }
        assert!(n >= 15, "{n} documented queries");
        assert!(doc.contains(&format!("`redis OR` → `{}`", e("redis OR"))));
    }

    proptest::proptest! {
        /// Whatever is typed, the parser answers (a tree or an error at a
        /// column inside the query or just past it) and never panics.
        #[test]
        fn never_panics(q in "[a-z_:()\" *\\-ORANDT\\.=]{0,60}") {
            match parse(&q) {
                Ok(_) => {}
                Err(e) => {
                    proptest::prop_assert!(e.column >= 1 && e.column <= q.chars().count() + 1, "{e} in {q:?}");
                }
            }
        }

        #[test]
        fn never_panics_on_any_text(q in "\\PC{0,80}") {
            let _ = parse(&q);
        }
    }
}
