//! Reads a nats-server's monitoring endpoints (`/healthz`, `/routez`, `/jsz`) over plain HTTP/1.0 on loopback.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A local monitoring endpoint answers in milliseconds; a slower one belongs to a node that is stuck or gone.
const MONITORING_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET http://127.0.0.1:<port><path_and_query>`: the status code and the body.
///
/// HTTP/1.0 makes the server close the connection after the body, so no chunking or keep-alive to
/// handle — and the crate needs no HTTP client for three endpoints.
pub(crate) async fn http_get(port: u16, path_and_query: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(MONITORING_TIMEOUT, exchange)
        .await
        .with_context(|| format!("monitoring port {port} did not answer {path_and_query} in time"))?
        .with_context(|| format!("failed to GET {path_and_query} from monitoring port {port}"))?;
    let response = String::from_utf8_lossy(&response);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("monitoring port {port} sent a response without a header end to {path_and_query}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("monitoring port {port} sent no status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

pub(crate) async fn get_json(port: u16, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(port, path_and_query).await?;
    if status != 200 {
        bail!("{path_and_query} on monitoring port {port} answered {status}: {body}");
    }
    serde_json::from_str(&body)
        .with_context(|| format!("{path_and_query} on monitoring port {port} is not JSON: {body}"))
}

/// The server names this node has a route to (each name once, however many pooled connections).
pub(crate) fn routed_server_names(routez: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = routez
        .get("routes")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|route| route.get("remote_name")?.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The JetStream meta leader this node believes in, from `/jsz`.
pub(crate) fn meta_leader_name(jsz: &serde_json::Value) -> Option<String> {
    let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// A stream's leader as this node sees it, from `/jsz?streams=true`.
pub(crate) fn stream_leader_name(jsz: &serde_json::Value, stream: &str) -> Option<String> {
    let leader = stream_detail(jsz, stream)?
        .get("cluster")?
        .get("leader")?
        .as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// A durable consumer's leader as this node sees it, from `/jsz?consumers=true`.
pub(crate) fn consumer_leader_name(
    jsz: &serde_json::Value,
    stream: &str,
    consumer: &str,
) -> Option<String> {
    let leader = stream_detail(jsz, stream)?
        .get("consumer_detail")?
        .as_array()?
        .iter()
        .find(|detail| detail.get("name").and_then(serde_json::Value::as_str) == Some(consumer))?
        .get("cluster")?
        .get("leader")?
        .as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// How many messages this node's replica of a stream holds, from `/jsz?streams=true`.
pub(crate) fn stream_message_count(jsz: &serde_json::Value, stream: &str) -> Option<u64> {
    stream_detail(jsz, stream)?
        .get("state")?
        .get("messages")?
        .as_u64()
}

/// Every stream's and consumer's (durable or not) leader as this node sees it, from `/jsz?consumers=true`:
/// (stream, consumer or `None` for the stream itself, leader or `None` while there is none).
pub(crate) fn leaders(jsz: &serde_json::Value) -> Vec<(String, Option<String>, Option<String>)> {
    let leader_of = |detail: &serde_json::Value| {
        let leader = detail.get("cluster")?.get("leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    };
    let name_of = |detail: &serde_json::Value| detail.get("name").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let mut found = Vec::new();
    let streams = jsz
        .get("account_details")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|account| account.get("stream_detail")?.as_array())
        .flatten();
    for stream in streams {
        found.push((name_of(stream), None, leader_of(stream)));
        for consumer in stream.get("consumer_detail").and_then(serde_json::Value::as_array).into_iter().flatten() {
            found.push((name_of(stream), Some(name_of(consumer)), leader_of(consumer)));
        }
    }
    found
}

fn stream_detail<'a>(jsz: &'a serde_json::Value, stream: &str) -> Option<&'a serde_json::Value> {
    jsz.get("account_details")?
        .as_array()?
        .iter()
        .filter_map(|account| account.get("stream_detail")?.as_array())
        .flatten()
        .find(|detail| detail.get("name").and_then(serde_json::Value::as_str) == Some(stream))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        consumer_leader_name, leaders, meta_leader_name, routed_server_names, stream_leader_name,
        stream_message_count,
    };

    #[test]
    fn reads_routes_and_leaders() {
        let routez = json!({"routes": [
            {"remote_name": "n3"}, {"remote_name": "n2"}, {"remote_name": "n3"}, {"rid": 4}
        ]});
        assert_eq!(routed_server_names(&routez), vec!["n2", "n3"]);
        assert!(routed_server_names(&json!({"num_routes": 0})).is_empty());

        assert_eq!(
            meta_leader_name(&json!({"meta_cluster": {"leader": "n2"}})).as_deref(),
            Some("n2")
        );
        assert_eq!(
            meta_leader_name(&json!({"meta_cluster": {"leader": ""}})),
            None
        );

        let jsz = json!({"account_details": [
            {"name": "$SYS"},
            {"name": "$G", "stream_detail": [
                {"name": "OTHER", "cluster": {"leader": "n1"}},
                {"name": "MESSAGES", "cluster": {"leader": "n3"}, "state": {"messages": 7},
                 "consumer_detail": [{"name": "fanout", "cluster": {"leader": "n1"}}]}
            ]}
        ]});
        assert_eq!(stream_leader_name(&jsz, "MESSAGES").as_deref(), Some("n3"));
        assert_eq!(stream_message_count(&jsz, "MESSAGES"), Some(7));
        assert_eq!(stream_leader_name(&jsz, "MISSING"), None);
        assert_eq!(
            consumer_leader_name(&jsz, "MESSAGES", "fanout").as_deref(),
            Some("n1")
        );
        assert_eq!(consumer_leader_name(&jsz, "MESSAGES", "other"), None);
        let some = |text: &str| Some(text.to_owned());
        assert_eq!(
            leaders(&jsz),
            vec![
                ("OTHER".to_owned(), None, some("n1")),
                ("MESSAGES".to_owned(), None, some("n3")),
                ("MESSAGES".to_owned(), some("fanout"), some("n1")),
            ]
        );
    }
}
