//! Page iteration: the `link` header (GitHub), next-URL and cursor styles (Salesforce, Slack) as one
//! stream of pages.

use futures::stream::{self, BoxStream, StreamExt};
use serde_json::Value;

use crate::error::Result;

/// `rel` → URL from an RFC 8288 `link` header.
pub fn parse_link_header(header: &str) -> Vec<(String, String)> {
    header
        .split(',')
        .filter_map(|part| {
            let (url, params) = part.split_once(';')?;
            let url = url.trim().trim_start_matches('<').trim_end_matches('>').to_string();
            let rel = params.split(';').find_map(|p| p.trim().strip_prefix("rel="))?.trim_matches('"').to_string();
            Some((rel, url))
        })
        .collect()
}

pub fn link(header: Option<&str>, rel: &str) -> Option<String> {
    parse_link_header(header?).into_iter().find(|(r, _)| r == rel).map(|(_, u)| u)
}

/// The `page` number in a URL's query.
pub fn page_number(url: &str) -> Option<usize> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "page").and_then(|(_, v)| v.parse().ok())
}

/// Follows a chain of pages: `fetch(next)` returns rows and the token of the following page (`None` at
/// the end). The first call gets `None`. Stops at the first error, which it yields.
pub fn follow<T, F, Fut>(fetch: F) -> BoxStream<'static, Result<Vec<Value>>>
where
    T: Send + 'static,
    F: Fn(Option<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Vec<Value>, Option<T>)>> + Send + 'static,
{
    stream::unfold((Some(None), fetch), |(state, fetch)| async move {
        let token = state?;
        match fetch(token).await {
            Ok((rows, next)) => Some((Ok(rows), (next.map(Some), fetch))),
            Err(e) => Some((Err(e), (None, fetch))),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_github_link_headers() {
        let h = r#"<https://api.example/repos/a/b/issues?page=2&per_page=100>; rel="next", <https://api.example/repos/a/b/issues?page=7&per_page=100>; rel="last""#;
        assert_eq!(link(Some(h), "next").as_deref(), Some("https://api.example/repos/a/b/issues?page=2&per_page=100"));
        assert_eq!(link(Some(h), "last").and_then(|u| page_number(&u)), Some(7));
        assert_eq!(link(Some(h), "prev"), None);
    }

    #[tokio::test]
    async fn follow_stops_when_there_is_no_next_token() {
        let pages: Vec<_> = follow(|token: Option<u32>| async move {
            let n = token.unwrap_or(0);
            Ok((vec![serde_json::json!(n)], if n < 2 { Some(n + 1) } else { None }))
        })
        .collect()
        .await;
        assert_eq!(pages.len(), 3);
    }
}
