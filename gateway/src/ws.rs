//! `GET /v1/ws`: authenticates before the upgrade, then runs one reader task and one writer task per socket.
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so it is never raced in a `select!`: the
//! reader owns the read half and only ends by itself or by being aborted with the socket.
//! Fragments are reassembled here under our own cap (0.10's FragmentCollector has none).

use std::sync::Arc;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite};
use hyper_util::rt::TokioIo;
use schemas::{ConnectQuery, ErrorBody};
use subjects::Id;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api_error::{parse_id, ApiError};
use crate::auth_extract::{bearer_token, ApiQuery};
use crate::delivery_hub::{AttachError, ConnectionId, DeviceAttachment};
use crate::heartbeat::{ActivityClock, SILENT_INTERVALS_BEFORE_TIMEOUT};
use crate::outbound::{close_codes, Outbound};
use crate::rate_limit::LimitedAction;
use crate::session::{Flow, Session};
use crate::state::AppState;

type Socket = TokioIo<hyper::upgrade::Upgraded>;

/// Frames up to this multiple of the message cap are read and refused with `too_large`, keeping the
/// socket usable; beyond it the frame is not even read and the socket closes (code 1009).
const HARD_FRAME_CAP_FACTOR: usize = 4;
/// How long a closing connection's writer gets to flush its last frames.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a new connection waits for Redis to register its device before it is served anyway.
const PRESENCE_REGISTRATION_PATIENCE: Duration = Duration::from_secs(1);

/// Opens the WebSocket; the frames it then carries are in PROTOCOL.md. The token is checked before the upgrade.
#[utoipa::path(get, path = "/v1/ws", tag = "realtime", security(("bearer" = [])), params(
    ("token" = Option<String>, Query, description = "The JWT, for browsers that cannot set `Authorization` on a WebSocket"),
    ("device" = Option<String>, Query, description = "A stable device id; absent means a fresh one", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ("resume" = Option<String>, Query, description = "`1` or `true`: the first frame will be `sync`, and live messages wait for its answer"),
), responses(
    (status = 101, description = "Switched to the WebSocket protocol"),
    (status = 400, description = "`invalid`: a bad device id, or not a WebSocket upgrade request", body = ErrorBody),
    (status = 429, description = "`rate_limited`, with `retry_after_ms` and `Retry-After`", body = ErrorBody),
))]
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiQuery(query): ApiQuery<ConnectQuery>,
    headers: HeaderMap,
    incoming: Result<fastwebsockets::upgrade::IncomingUpgrade, hyper::StatusCode>,
) -> Result<Response, ApiError> {
    let token = bearer_token(&headers).or(query.token.clone()).ok_or_else(|| ApiError::unauthorized("missing token"))?;
    let user = state.auth.verify(&token)?;
    // Checked after the token, so a client without one learns that first, as PROTOCOL.md promises.
    let incoming = incoming.map_err(|_| ApiError::invalid("not a WebSocket upgrade: send Upgrade: websocket, Sec-WebSocket-Key and Sec-WebSocket-Version: 13"))?;
    state.rate_limiter.check(LimitedAction::Connect, &user, peer.ip()).await?;
    let device = match &query.device {
        Some(device) => parse_id("device", device)?,
        None => Id::parse(&format!("dev-{}", ulid::Ulid::new())).expect("ulids are valid ids"),
    };
    let resume = matches!(query.resume.as_deref(), Some("1" | "true"));
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(schemas::ErrorCode::Unavailable, "gateway is shutting down"));
    }
    // Subscribe for deliveries before answering 101: once the client knows it is connected,
    // every message sent to it from then on reaches this gateway.
    let limits = &state.config.limits;
    let (outbound_tx, outbound_rx) = mpsc::channel(limits.outbound_queue_frames);
    let (control_tx, control_rx) = mpsc::channel(16);
    let connection = state.hub.next_connection_id();
    let attachment = DeviceAttachment {
        connection,
        device: device.clone(),
        outbound: outbound_tx.clone(),
        control: control_tx.clone(),
        hold_until_synced: resume,
        max_held: limits.outbound_queue_frames,
    };
    state.hub.attach(&user, attachment, limits.max_devices_per_user).await.map_err(|error| match error {
        AttachError::TooManyDevices(count) => ApiError::forbidden(format!("{count} devices of {user} are connected here already; the limit is {}", limits.max_devices_per_user)),
        AttachError::Unavailable(error) => {
            tracing::warn!(%error, "failed to subscribe for deliveries");
            ApiError::new(schemas::ErrorCode::Unavailable, "delivery is unavailable; retry shortly")
        }
    })?;
    let (response, upgraded) = match incoming.upgrade() {
        Ok(upgrade) => upgrade,
        Err(error) => {
            state.hub.detach(&user, connection).await;
            return Err(ApiError::invalid(format!("websocket upgrade failed: {error}")));
        }
    };
    let channels = ConnectionChannels { connection, outbound_tx, outbound_rx, control_tx, control_rx };
    let connection_state = state.clone();
    let request_id = ulid::Ulid::new().to_string();
    let connection_span = tracing::info_span!("connection", %request_id, %user, %device);
    state.connections.spawn(tracing::Instrument::instrument(async move {
        match upgraded.await {
            Ok(socket) => {
                let metrics = telemetry::gateway_metrics();
                metrics.connects.inc();
                metrics.connections.inc();
                // Before the reader starts: once the device has a reply, it counts as online everywhere.
                let patience = PRESENCE_REGISTRATION_PATIENCE.min(connection_state.config.heartbeat_interval);
                // Boxed, so an idle connection's task holds only the state it waits in, not the union of all.
                Box::pin(connection_state.presence.connected(&user, connection, patience)).await;
                Box::pin(run_connection(connection_state.clone(), socket, &user, device, peer.ip(), resume, channels, request_id)).await;
                connection_state.presence.disconnected(&user, connection);
                metrics.connections.dec();
                metrics.disconnects.inc();
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade did not complete"),
        }
        Box::pin(connection_state.hub.detach(&user, connection)).await;
    }, connection_span));
    Ok(response.into_response())
}

/// The queues of one connection, made before the upgrade so the hub can be attached first.
struct ConnectionChannels {
    connection: ConnectionId,
    outbound_tx: mpsc::Sender<Outbound>,
    outbound_rx: mpsc::Receiver<Outbound>,
    control_tx: mpsc::Sender<Outbound>,
    control_rx: mpsc::Receiver<Outbound>,
}

async fn run_connection(
    state: AppState,
    mut socket: WebSocket<Socket>,
    user: &Id,
    device: Id,
    address: IpAddr,
    resume: bool,
    channels: ConnectionChannels,
    request_id: String,
) {
    let limits = state.config.limits.clone();
    socket.set_max_message_size(limits.max_frame_bytes.saturating_mul(HARD_FRAME_CAP_FACTOR));
    socket.set_auto_pong(true);
    socket.set_auto_close(true);
    let (read_half, write_half) = socket.split(tokio::io::split);
    let ConnectionChannels { connection, outbound_tx, outbound_rx, control_tx, control_rx } = channels;
    let activity = Arc::new(ActivityClock::start());
    // The reader and writer tasks log inside the connection's span, so their lines carry its `request_id`.
    let heartbeat = Heartbeat { interval: state.config.heartbeat_interval, activity: activity.clone() };
    let mut writer = tokio::spawn(tracing::Instrument::in_current_span(write_frames(write_half, outbound_rx, control_rx, state.shutdown.clone(), heartbeat)));
    tracing::debug!(%user, %device, connection, resume, "device connected");
    // Before the reader starts, so the snapshot precedes the reply to the device's first frame.
    Box::pin(crate::presence_snapshot::send_presence_snapshot(&state, user, &outbound_tx)).await;
    let session = Session::new(state.clone(), user.clone(), device, connection, outbound_tx, address, request_id);
    let mut reader = tokio::spawn(tracing::Instrument::in_current_span(read_frames(session, read_half, control_tx.clone(), limits.max_frame_bytes, activity)));
    tokio::select! {
        _ = &mut writer => reader.abort(),
        flow = &mut reader => {
            if let Ok(Flow::Close { code, reason }) = flow {
                let _ = control_tx.send(Outbound::Close { code, reason }).await;
            }
            if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, &mut writer).await.is_err() {
                writer.abort();
            }
        }
    }
    tracing::debug!(%user, connection, "device disconnected");
}

async fn read_frames(
    mut session: Session,
    mut read_half: WebSocketRead<ReadHalf<Socket>>,
    control_tx: mpsc::Sender<Outbound>,
    max_message_bytes: usize,
    activity: Arc<ActivityClock>,
) -> Flow {
    let mut forward_obligated = |frame: Frame<'_>| {
        // A client's ping is answered here and never returned by `read_frame`, but it is activity all the same.
        activity.record_activity();
        let control_tx = control_tx.clone();
        let reply = match frame.opcode {
            OpCode::Close => Outbound::CloseEcho(frame.payload.to_vec()),
            _ => Outbound::Pong(frame.payload.to_vec()),
        };
        async move { control_tx.send(reply).await.map_err(|_| std::io::Error::other("writer gone")) }
    };
    // A message split over fragments: its opcode and the bytes so far (None while discarding an oversized one).
    let mut partial: Option<(OpCode, Option<Vec<u8>>)> = None;
    loop {
        let frame = match read_half.read_frame(&mut forward_obligated).await {
            Ok(frame) => frame,
            Err(WebSocketError::FrameTooLarge) => {
                Box::pin(session.reply(too_large(max_message_bytes).to_frame(None))).await;
                return Flow::Close { code: close_codes::MESSAGE_TOO_BIG, reason: "message too large".to_owned() };
            }
            Err(error) => {
                tracing::debug!(%error, "websocket read ended");
                // The peer is gone or broke the framing: end the writer now rather than after its drain timeout,
                // so the device counts as offline at once. Writing to a dead socket fails fast.
                let _ = control_tx.try_send(Outbound::Close { code: close_codes::GOING_AWAY, reason: "connection ended".to_owned() });
                return Flow::Continue;
            }
        };
        activity.record_activity();
        let (opcode, message) = match frame.opcode {
            OpCode::Close => return Flow::Continue,
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary => {
                let fits = frame.payload.len() <= max_message_bytes;
                if !frame.fin {
                    partial = Some((frame.opcode, fits.then(|| frame.payload.to_vec())));
                    continue;
                }
                (frame.opcode, fits.then(|| frame.payload.to_vec()))
            }
            OpCode::Continuation => {
                let Some((opcode, bytes)) = partial.take() else {
                    return Flow::Close { code: close_codes::POLICY_VIOLATION, reason: "continuation without a first fragment".to_owned() };
                };
                let bytes = bytes.filter(|bytes| bytes.len() + frame.payload.len() <= max_message_bytes).map(|mut bytes| {
                    bytes.extend_from_slice(&frame.payload);
                    bytes
                });
                if !frame.fin {
                    partial = Some((opcode, bytes));
                    continue;
                }
                (opcode, bytes)
            }
        };
        let Some(message) = message else {
            let flow = Box::pin(session.protocol_error(None, too_large(max_message_bytes))).await;
            if let Flow::Close { .. } = flow {
                return flow;
            }
            continue;
        };
        // Handling a frame (sync, send, media…) takes KiBs of future state; boxed, it is held only
        // while a frame is handled, not by every idle connection's reader task.
        let flow = match (opcode, String::from_utf8(message)) {
            (OpCode::Text, Ok(text)) => Box::pin(session.handle_text(&text)).await,
            (OpCode::Text, Err(_)) => Box::pin(session.protocol_error(None, ApiError::invalid("text frame is not UTF-8"))).await,
            _ => Box::pin(session.protocol_error(None, ApiError::invalid("frames are JSON text; binary frames are not accepted"))).await,
        };
        if let Flow::Close { .. } = flow {
            return flow;
        }
    }
}

fn too_large(max_message_bytes: usize) -> ApiError {
    ApiError::too_large(format!("a message may be at most {max_message_bytes} bytes"))
}

/// What the writer needs to keep a socket honest: how often to ping, and when the peer was last heard.
struct Heartbeat {
    interval: Duration,
    activity: Arc<ActivityClock>,
}

async fn write_frames(
    mut write_half: WebSocketWrite<WriteHalf<Socket>>,
    mut outbound_rx: mpsc::Receiver<Outbound>,
    mut control_rx: mpsc::Receiver<Outbound>,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
) {
    let silence_timeout = heartbeat.interval * SILENT_INTERVALS_BEFORE_TIMEOUT;
    let mut next_ping = Instant::now() + heartbeat.interval;
    loop {
        let silence_deadline = heartbeat.activity.last_activity() + silence_timeout;
        let next = tokio::select! {
            biased;
            Some(control) = control_rx.recv() => control,
            _ = shutdown.cancelled() => Outbound::Close { code: close_codes::GOING_AWAY, reason: "server shutting down; reconnect".to_owned() },
            _ = tokio::time::sleep_until(next_ping.min(silence_deadline)) => {
                let now = Instant::now();
                if now >= heartbeat.activity.last_activity() + silence_timeout {
                    tracing::debug!(?silence_timeout, "closing a silent socket");
                    Outbound::Close { code: close_codes::GOING_AWAY, reason: "heartbeat timeout".to_owned() }
                } else if now >= next_ping {
                    next_ping = now + heartbeat.interval;
                    Outbound::Ping
                } else {
                    // Woke for a silence deadline, but a frame arrived meanwhile.
                    continue;
                }
            }
            Some(frame) = outbound_rx.recv() => frame,
            else => return,
        };
        let (frame, last) = match &next {
            Outbound::Text(bytes) => (Frame::text(Payload::Borrowed(bytes)), false),
            Outbound::Pong(payload) => (Frame::pong(Payload::Borrowed(payload)), false),
            Outbound::Ping => (Frame::new(true, OpCode::Ping, None, Payload::Borrowed(&[])), false),
            Outbound::CloseEcho(payload) => (Frame::close_raw(Payload::Borrowed(payload)), true),
            Outbound::Close { code, reason } => (Frame::close(*code, reason.as_bytes()), true),
        };
        // A peer that accepts no bytes for as long as the silence timeout is as gone as one that sends none;
        // without this bound a vanished peer with a full TCP window would hold the writer forever.
        match tokio::time::timeout(silence_timeout, write_half.write_frame(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "websocket write failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?silence_timeout, "websocket write stalled; dropping the socket");
                return;
            }
        }
        if last {
            return;
        }
    }
}
