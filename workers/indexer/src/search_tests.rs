//! The index end to end without NATS: documents in through the writer thread, then ranking, the conversation filter, highlights, replacement by key, expiry and aggregations.

use schemas::{Body, Message, SearchServiceRequest};
use tempfile::TempDir;
use time::OffsetDateTime;

use crate::index_schema::open_index;
use crate::index_writer_thread::{IndexWriterHandle, WriterCommand};
use crate::searcher::SearchIndex;

const DAY: time::Duration = time::Duration::days(1);

struct TestIndex {
    _directory: TempDir,
    writer: IndexWriterHandle,
    index: SearchIndex,
}

async fn test_index() -> TestIndex {
    let directory = tempfile::tempdir().unwrap();
    let opened = open_index(directory.path(), subjects::MESSAGE_STREAM).unwrap();
    let (writer, snapshot) = IndexWriterHandle::start(&opened).unwrap();
    TestIndex { _directory: directory, writer, index: SearchIndex { fields: opened.fields, snapshot } }
}

fn message(conversation: &str, seq: u64, sender: &str, age: time::Duration, body: Body) -> Message {
    Message::new(
        conversation.to_owned(),
        seq,
        format!("m{seq}"),
        sender.to_owned(),
        "phone".to_owned(),
        OffsetDateTime::now_utc() - age,
        body,
        None,
    )
}

impl TestIndex {
    async fn add(&self, stream_seq: u64, message: Message) {
        self.writer.send(WriterCommand::Index { stream_seq, message: Box::new(message) }).await.unwrap();
    }

    fn search(&self, q: &str, conversations: &[&str], aggregate: bool) -> schemas::SearchServiceReply {
        let request = SearchServiceRequest {
            q: q.to_owned(),
            conversations: Some(conversations.iter().map(|conversation| conversation.to_string()).collect()),
            limit: 10,
            offset: 0,
            max_stream_seq: None,
            now_ms: None,
            aggregate,
        };
        self.index.search(&request).unwrap()
    }

    fn seqs(&self, q: &str, conversations: &[&str]) -> Vec<(String, u64)> {
        self.search(q, conversations, false).hits.into_iter().map(|hit| (hit.message.conversation_id, hit.message.seq)).collect()
    }
}

#[tokio::test]
async fn recent_matches_rank_first_and_other_conversations_never_match() {
    let index = test_index().await;
    index.add(1, message("a", 1, "alice", 60 * DAY, Body::text("launch plan"))).await;
    index.add(2, message("a", 2, "bob", DAY, Body::text("launch plan"))).await;
    index.add(3, message("b", 1, "carol", time::Duration::ZERO, Body::text("launch plan"))).await;
    index.add(4, message("a", 3, "bob", time::Duration::ZERO, Body { ciphertext: Some("launch".to_owned()), ..Body::default() })).await;
    index.writer.commit_and_wait(4).await.unwrap();

    assert_eq!(index.seqs("launch", &["a"]), vec![("a".to_owned(), 2), ("a".to_owned(), 1)], "newer first, b filtered, ciphertext absent");
    assert_eq!(index.seqs("LAUNCH", &["a", "b"]).len(), 3);
    assert!(index.seqs("launch", &[]).is_empty());
    assert!(index.seqs("launch", &["c"]).is_empty());
    let reply = index.search("plan", &["b"], false);
    assert_eq!(reply.hits[0].highlight, "launch <b>plan</b>");
    assert_eq!(reply.max_stream_seq, 4);
}

#[tokio::test]
async fn a_redelivered_entry_replaces_its_document_and_expired_ones_go() {
    let index = test_index().await;
    index.add(1, message("a", 1, "alice", DAY, Body::text("first version"))).await;
    index.add(2, message("a", 2, "alice", DAY, Body::text("second words"))).await;
    index.writer.commit_and_wait(2).await.unwrap();
    index.add(1, message("a", 1, "alice", DAY, Body::text("first version"))).await;
    index.writer.commit_and_wait(2).await.unwrap();
    assert_eq!(index.seqs("version", &["a"]), vec![("a".to_owned(), 1)]);
    assert_eq!(index.index.snapshot.current().searcher.num_docs(), 2);

    index.writer.send(WriterCommand::RemoveBefore { first_kept_seq: 2 }).await.unwrap();
    index.writer.commit_and_wait(2).await.unwrap();
    assert!(index.seqs("version", &["a"]).is_empty());
    assert_eq!(index.seqs("second", &["a"]).len(), 1);
}

#[tokio::test]
async fn the_commit_payload_is_where_a_reopened_index_resumes() {
    let directory = tempfile::tempdir().unwrap();
    {
        let opened = open_index(directory.path(), subjects::MESSAGE_STREAM).unwrap();
        assert_eq!(opened.indexed_stream_seq, 0);
        let (writer, _) = IndexWriterHandle::start(&opened).unwrap();
        writer.send(WriterCommand::Index { stream_seq: 7, message: Box::new(message("a", 1, "alice", DAY, Body::text("kept"))) }).await.unwrap();
        writer.commit_and_wait(7).await.unwrap();
        // Sent but never committed, as when the process dies: it must not survive.
        writer.send(WriterCommand::Index { stream_seq: 8, message: Box::new(message("a", 2, "alice", DAY, Body::text("lost"))) }).await.unwrap();
        writer.finish().await.unwrap();
    }
    let opened = open_index(directory.path(), subjects::MESSAGE_STREAM).unwrap();
    assert_eq!(opened.indexed_stream_seq, 7);
    let (writer, snapshot) = IndexWriterHandle::start(&opened).unwrap();
    assert_eq!(snapshot.current().searcher.num_docs(), 1);
    writer.finish().await.unwrap();
}

#[tokio::test]
async fn an_index_built_on_another_stream_starts_over_empty_on_the_search_feed() {
    let directory = tempfile::tempdir().unwrap();
    {
        let opened = open_index(directory.path(), subjects::MESSAGE_STREAM).unwrap();
        let (writer, _) = IndexWriterHandle::start(&opened).unwrap();
        writer.send(WriterCommand::Index { stream_seq: 7, message: Box::new(message("a", 1, "alice", DAY, Body::text("positions of MESSAGES"))) }).await.unwrap();
        writer.commit_and_wait(7).await.unwrap();
        writer.finish().await.unwrap();
    }
    let opened = open_index(directory.path(), subjects::SEARCH_FEED_STREAM).unwrap();
    assert_eq!((opened.indexed_stream_seq, opened.feed.as_str()), (0, subjects::SEARCH_FEED_STREAM), "sequence 7 of MESSAGES means nothing in the feed");
    let (writer, snapshot) = IndexWriterHandle::start(&opened).unwrap();
    assert_eq!(snapshot.current().searcher.num_docs(), 0, "emptied, to be rebuilt from the feed");
    writer.send(WriterCommand::Index { stream_seq: 2, message: Box::new(message("a", 1, "alice", DAY, Body::text("from the feed"))) }).await.unwrap();
    writer.commit_and_wait(2).await.unwrap();
    writer.finish().await.unwrap();
    // The feed is now what its position counts in: reopening on it resumes.
    let opened = open_index(directory.path(), subjects::SEARCH_FEED_STREAM).unwrap();
    assert_eq!(opened.indexed_stream_seq, 2);
}

#[tokio::test]
async fn aggregations_count_per_day_conversation_and_sender() {
    let index = test_index().await;
    index.add(1, message("a", 1, "alice", 2 * DAY, Body::text("sales figures"))).await;
    index.add(2, message("a", 2, "bob", time::Duration::ZERO, Body::text("sales up"))).await;
    index.add(3, message("b", 1, "bob", time::Duration::ZERO, Body::text("sales down"))).await;
    index.add(4, message("c", 1, "bob", time::Duration::ZERO, Body::text("sales elsewhere"))).await;
    index.writer.commit_and_wait(4).await.unwrap();
    let counts = index.search("sales", &["a", "b"], true).aggregations.unwrap();
    assert_eq!(counts.total, 3);
    let days: Vec<u64> = counts.per_day.iter().map(|day| day.count).collect();
    assert_eq!(days.iter().sum::<u64>(), 3);
    assert!(days.len() >= 2, "two days apart: {:?}", counts.per_day);
    let conversations: Vec<(&str, u64)> = counts.per_conversation.iter().map(|bucket| (bucket.conversation_id.as_str(), bucket.count)).collect();
    assert_eq!(conversations, vec![("a", 2), ("b", 1)]);
    let senders: Vec<(&str, u64)> = counts.per_sender.iter().map(|bucket| (bucket.sender.as_str(), bucket.count)).collect();
    assert_eq!(senders, vec![("bob", 2), ("alice", 1)]);
}

#[tokio::test]
async fn highlights_are_escaped_html_and_an_everything_query_shows_the_start() {
    let index = test_index().await;
    index.add(1, message("a", 1, "alice", DAY, Body::text("<script>alert(1)</script> & plan"))).await;
    index.writer.commit_and_wait(1).await.unwrap();
    let reply = index.search("plan", &["a"], false);
    assert_eq!(reply.hits[0].highlight, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; <b>plan</b>");
    let everything = index.search("", &["a"], false);
    assert_eq!(everything.hits[0].highlight, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; plan");
}
