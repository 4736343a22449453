//! Media: signed uploads, a real clamd scan, image limits and thumbnails, who may read what, and cacheable downloads.

use std::io::Cursor;
use std::time::Duration;

use reqwest::header;
use reqwest::StatusCode;
use schemas::{MediaInfo, MediaStatus, ServerFrame};
use serde_json::{json, Value};
use testkit::{Api, TestSystem};

const WAIT: Duration = Duration::from_secs(30);
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!H+H*";

/// `POST /v1/media`, returning (media_id, upload_url).
async fn grant(api: &Api, content_type: &str, size: usize) -> anyhow::Result<(String, String)> {
    let (status, body) = api.post("/v1/media", json!({"content_type": content_type, "size": size})).await?;
    anyhow::ensure!(status == StatusCode::CREATED, "grant: {status} {body}");
    Ok((body["media_id"].as_str().unwrap().to_owned(), body["upload_url"].as_str().unwrap().to_owned()))
}

async fn put(url: &str, bytes: Vec<u8>) -> anyhow::Result<(StatusCode, String)> {
    let response = reqwest::Client::new().put(url).body(bytes).send().await?;
    Ok((response.status(), response.text().await?))
}

/// Grants, uploads, and returns the media id.
pub(crate) async fn upload(api: &Api, content_type: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
    let (media_id, url) = grant(api, content_type, bytes.len()).await?;
    let (status, body) = put(&url, bytes).await?;
    anyhow::ensure!(status == StatusCode::CREATED, "upload: {status} {body}");
    Ok(media_id)
}

async fn metadata(api: &Api, media_id: &str) -> anyhow::Result<(StatusCode, Value)> {
    api.get(&format!("/v1/media/{media_id}")).await
}

/// Polls the metadata until the scan is done.
pub(crate) async fn wait_for_scan(api: &Api, media_id: &str) -> anyhow::Result<MediaInfo> {
    testkit::wait_until("the media scan finishes", WAIT, || {
        let api = api.clone();
        async move { metadata(&api, media_id).await.is_ok_and(|(status, body)| status == StatusCode::OK && body["status"] != "pending") }
    })
    .await?;
    let (_, body) = metadata(api, media_id).await?;
    Ok(serde_json::from_value(body)?)
}

async fn download(url: &str, headers: &[(header::HeaderName, &str)]) -> anyhow::Result<reqwest::Response> {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    Ok(request.send().await?)
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    bytes
}

/// A JPEG carrying an EXIF segment with a recognisable "GPS" payload, as phones write them.
fn with_exif(jpeg: Vec<u8>) -> Vec<u8> {
    let mut payload = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    payload.extend_from_slice(EXIF_SECRET);
    let length = (payload.len() + 2) as u16;
    let mut bytes = jpeg[..2].to_vec();
    bytes.extend_from_slice(&[0xFF, 0xE1]);
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(&jpeg[2..]);
    bytes
}

const EXIF_SECRET: &[u8] = b"GPS 48.8584N 2.2945E";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

pub(crate) fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, 0, (y % 256) as u8, 200]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgba8(image).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// A real 20,000 x 20,000 PNG of zeros: a few hundred KiB that would decode to 400 MB (1.2 GB as RGB).
fn png_bomb() -> Vec<u8> {
    let side = 20_000u32;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0u8; (side / 8) as usize];
    for _ in 0..side {
        std::io::Write::write_all(&mut stream, &row).unwrap();
    }
    stream.finish().unwrap();
    writer.finish().unwrap();
    bytes
}

fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).unwrap();
    (image.width(), image.height())
}

#[tokio::test]
async fn jpeg_and_png_become_ready_with_thumbnails_and_reach_members() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let carol = system.api(0, "carol");
    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    let mut bob_phone = system.connect(0, "bob", "phone").await?;

    let original = with_exif(jpeg(1600, 1200));
    assert!(contains(&original, EXIF_SECRET));
    let photo = upload(&alice, "image/jpeg", original).await?;
    let frames = alice_phone.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Media { .. })).await?;
    assert_eq!(
        frames.last(),
        Some(&ServerFrame::Media { media_id: photo.clone(), status: MediaStatus::Ready, reason: None }),
        "the uploader is told on the WebSocket"
    );
    let info = wait_for_scan(&alice, &photo).await?;
    assert_eq!((info.status, info.content_type.as_str()), (MediaStatus::Ready, "image/jpeg"));
    let thumbnail = info.thumbnail.clone().unwrap();
    assert_eq!((thumbnail.width, thumbnail.height), (320, 240));
    let thumbnail_bytes = download(info.thumbnail_url.as_deref().unwrap(), &[]).await?.bytes().await?;
    assert_eq!(decoded_size(&thumbnail_bytes), (320, 240));
    let file = download(info.url.as_deref().unwrap(), &[]).await?;
    assert_eq!(file.status(), StatusCode::OK);
    let served = file.bytes().await?;
    assert_eq!(decoded_size(&served), (1600, 1200));
    assert!(!contains(&served, EXIF_SECRET) && !contains(&served, b"Exif"), "metadata such as EXIF GPS is stripped");

    let drawing = upload(&alice, "image/png", png_with_alpha(500, 1000)).await?;
    let info = wait_for_scan(&alice, &drawing).await?;
    assert_eq!((info.status, info.content_type.as_str()), (MediaStatus::Ready, "image/png"), "transparency stays PNG");
    let thumbnail_bytes = download(info.thumbnail_url.as_deref().unwrap(), &[]).await?.bytes().await?;
    assert_eq!(decoded_size(&thumbnail_bytes), (160, 320));

    // Members see a media message and can open it; others cannot.
    let conversation = alice.create_direct("bob").await?;
    assert_eq!(metadata(&bob, &photo).await?.0, StatusCode::FORBIDDEN, "not sent anywhere bob is yet");
    let (status, body) = alice
        .post("/v1/messages", json!({"conversation_id": conversation.id, "client_msg_id": "pic-1", "body": {"media_id": photo, "text": "look"}}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let messages = bob_phone.messages_until(&conversation.id, 1, WAIT).await?;
    assert_eq!(messages[0].body.media_id.as_deref(), Some(photo.as_str()));
    let (status, body) = metadata(&bob, &photo).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bobs: MediaInfo = serde_json::from_value(body)?;
    assert_eq!(download(bobs.thumbnail_url.as_deref().unwrap(), &[]).await?.status(), StatusCode::OK);

    assert_eq!(metadata(&carol, &photo).await?.0, StatusCode::FORBIDDEN, "a non-member cannot read the metadata");
    // Carol cannot mint URLs: bob's URL with her name, or a made-up signature, is refused.
    let bobs_url = bobs.url.unwrap();
    // Flip the signature's last hex digit (to a different one: a fixed replacement would equal it one time in 16).
    let flipped = if bobs_url.ends_with('0') { '1' } else { '0' };
    for forged in [bobs_url.replace("reader=bob", "reader=carol"), format!("{}{flipped}", &bobs_url[..bobs_url.len() - 1])] {
        assert_eq!(download(&forged, &[]).await?.status(), StatusCode::FORBIDDEN, "{forged}");
    }
    let thumbnail_forged = bobs.thumbnail_url.unwrap().replace("reader=bob", "reader=carol");
    assert_eq!(download(&thumbnail_forged, &[]).await?.status(), StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn eicar_alone_or_inside_a_larger_file_is_rejected_and_never_served() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let alice = system.api(0, "alice");
    let mut alice_phone = system.connect(0, "alice", "phone").await?;
    let mut embedded = vec![b'a'; 200_000];
    embedded.extend_from_slice(EICAR);
    embedded.extend(std::iter::repeat_n(b'z', 100_000));
    let objects = async_nats::jetstream::new(system.connect_nats().await?).get_object_store(subjects::MEDIA_OBJECTS).await?;
    let conversation = alice.create_direct("bob").await?;
    for (content_type, content) in [("text/plain", EICAR.to_vec()), ("application/octet-stream", embedded)] {
        let media = upload(&alice, content_type, content).await?;
        let frames = alice_phone.frames_until(WAIT, |frame| matches!(frame, ServerFrame::Media { .. })).await?;
        let Some(ServerFrame::Media { media_id, status, reason }) = frames.last() else { unreachable!() };
        assert_eq!((media_id, *status), (&media, MediaStatus::Rejected));
        assert!(reason.as_deref().unwrap().contains("EICAR"), "{reason:?}");
        let info = wait_for_scan(&alice, &media).await?;
        assert_eq!((info.status, info.url, info.thumbnail_url), (MediaStatus::Rejected, None, None));
        assert!(objects.get(&media).await.is_err(), "nothing of a rejected upload reaches the served bucket");
        let (status, body) = alice
            .post("/v1/messages", json!({"conversation_id": conversation.id, "client_msg_id": format!("m-{media}"), "body": {"media_id": media}}))
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    Ok(())
}

/// Peak resident memory of this test process (worker included), from the kernel.
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_png_bomb_is_rejected_without_decoding_it() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let alice = system.api(0, "alice");
    let bomb = png_bomb();
    assert!(bomb.len() < 2 * 1024 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    let media = upload(&alice, "image/png", bomb).await?;
    let info = wait_for_scan(&alice, &media).await?;
    assert_eq!(info.status, MediaStatus::Rejected);
    assert!(info.reason.as_deref().unwrap().contains("limit"), "{:?}", info.reason);
    let limit = system.media_config().image_limits.max_alloc;
    assert!(peak_resident_bytes() < limit + 256 * 1024 * 1024, "peak memory {} stayed near the decode limit {limit}", peak_resident_bytes());
    Ok(())
}

#[tokio::test]
async fn send_accepts_only_ones_own_ready_media() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let conversation = alice.create_direct("bob").await?;
    let media = upload(&alice, "text/plain", b"notes".to_vec()).await?;
    wait_for_scan(&alice, &media).await?;
    let send = |api: Api, id: &'static str, media: String| {
        let conversation = conversation.id.clone();
        async move { api.post("/v1/messages", json!({"conversation_id": conversation, "client_msg_id": id, "body": {"media_id": media}})).await }
    };
    assert_eq!(send(bob.clone(), "b-1", media.clone()).await?.0, StatusCode::FORBIDDEN, "someone else's media");
    assert_eq!(send(alice.clone(), "a-0", "no-such-media".to_owned()).await?.0, StatusCode::BAD_REQUEST);
    let (status, body) = send(alice.clone(), "a-1", media.clone()).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A grant never uploaded has no record: invalid, not a message pointing at nothing.
    let (unused, _) = grant(&alice, "text/plain", 10).await?;
    assert_eq!(send(alice.clone(), "a-2", unused).await?.0, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn tampered_replayed_and_oversized_uploads_are_refused() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let quarantine = async_nats::jetstream::new(system.connect_nats().await?);

    let (media, url) = grant(&alice, "text/plain", 5).await?;
    for tampered in [url.replace("size=5", "size=6"), url.replace("uploader=alice", "uploader=bob"), url.replace("text/plain", "image/png")] {
        assert_eq!(put(&tampered, b"hello".to_vec()).await?.0, StatusCode::FORBIDDEN, "{tampered}");
    }
    let (status, body) = put(&url, b"hello, world".to_vec()).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(metadata(&alice, &media).await?.0, StatusCode::FORBIDDEN, "a refused upload leaves no record");
    let (status, body) = put(&url, b"hello".to_vec()).await?;
    assert_eq!(status, StatusCode::CREATED, "the URL still works after a refused attempt: {body}");
    assert_eq!(put(&url, b"hello".to_vec()).await?.0, StatusCode::FORBIDDEN, "a replay is refused");
    let (status, body) = metadata(&alice, &media).await?;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("pending")), "no media worker in this system");

    // Streaming past the declared size without a Content-Length is cut off too, and stores nothing.
    let (media, url) = grant(&alice, "application/octet-stream", 100_000).await?;
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![7u8; 64 * 1024])));
    let response = reqwest::Client::new().put(&url).body(reqwest::Body::wrap_stream(chunks)).send().await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let store = quarantine.get_object_store(subjects::MEDIA_QUARANTINE_OBJECTS).await?;
    assert!(store.get(&media).await.is_err(), "no partial object is left in quarantine");

    assert_eq!(alice.post("/v1/media", json!({"content_type": "text/html", "size": 5})).await?.0, StatusCode::BAD_REQUEST);
    assert_eq!(alice.post("/v1/media", json!({"content_type": "text/plain", "size": 26 * 1024 * 1024})).await?.0, StatusCode::PAYLOAD_TOO_LARGE);
    Ok(())
}

#[tokio::test]
async fn an_expired_upload_url_is_refused() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateway_config(|config| config.media.upload_url_ttl = Duration::ZERO).start().await?;
    let (_, url) = grant(&system.api(0, "alice"), "text/plain", 5).await?;
    let (status, body) = put(&url, b"hello".to_vec()).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("expired"), "{body}");
    Ok(())
}

#[tokio::test]
async fn downloads_support_ranges_and_conditional_requests() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let alice = system.api(0, "alice");
    let content: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();
    let media = upload(&alice, "application/pdf", content.clone()).await?;
    let info = wait_for_scan(&alice, &media).await?;
    let url = info.url.unwrap();

    let full = download(&url, &[]).await?;
    assert_eq!(full.status(), StatusCode::OK);
    let etag = full.headers()[header::ETAG].to_str()?.to_owned();
    let cache_control = full.headers()[header::CACHE_CONTROL].to_str()?.to_owned();
    assert!(cache_control.starts_with("private, max-age="), "{cache_control}");
    assert_eq!(full.bytes().await?.as_ref(), content.as_slice());

    let partial = download(&url, &[(header::RANGE, "bytes=200000-200099")]).await?;
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.headers()[header::CONTENT_RANGE], "bytes 200000-200099/300000");
    assert_eq!(partial.bytes().await?.as_ref(), &content[200_000..200_100]);
    let tail = download(&url, &[(header::RANGE, "bytes=-10")]).await?;
    assert_eq!(tail.bytes().await?.as_ref(), &content[content.len() - 10..]);
    assert_eq!(download(&url, &[(header::RANGE, "bytes=400000-")]).await?.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let cached = download(&url, &[(header::IF_NONE_MATCH, etag.as_str())]).await?;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()[header::ETAG].to_str()?, etag);
    assert_eq!(download(&url, &[(header::IF_NONE_MATCH, "\"other\"")]).await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_mid_scan_does_not_lose_the_job() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().with_media().start().await?;
    system.kill_media_worker(0);
    // A "clamd" that accepts and never answers holds the next worker inside its scan.
    let stalled_clamd = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stalled_address = stalled_clamd.local_addr()?.to_string();
    let stuck = system
        .add_media_worker_with(|config| {
            config.clamd_address = stalled_address;
            config.scan_timeout = Duration::from_secs(600);
        })
        .await?;
    let alice = system.api(0, "alice");
    let media = upload(&alice, "text/plain", b"important notes".to_vec()).await?;
    let (held_connection, _) = tokio::time::timeout(WAIT, stalled_clamd.accept()).await??;
    system.kill_media_worker(stuck);
    drop(held_connection);
    assert_eq!(metadata(&alice, &media).await?.1["status"], "pending", "not served before its scan finished");
    let conversation = alice.create_direct("bob").await?;
    let (status, body) = alice
        .post("/v1/messages", json!({"conversation_id": conversation.id, "client_msg_id": "early", "body": {"media_id": media}}))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "pending media cannot be sent yet: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("still being scanned"), "{body}");

    system.add_media_worker().await?;
    let info = wait_for_scan(&alice, &media).await?;
    assert_eq!(info.status, MediaStatus::Ready, "the job came back to a live worker after ack_wait");
    Ok(())
}
