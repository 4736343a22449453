//! A loopback TCP proxy that a test can cut (every live connection dropped, new ones refused) and heal, to partition a server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A local target either answers at once or is down; waiting longer only delays the client's own retry.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    /// Where connections go; `None` until the target has started (its port is chosen by the target).
    target: Option<SocketAddr>,
    cut: bool,
}

/// Listens on 127.0.0.1 and relays each connection to a target, until cut.
///
/// A cut closes both ends of every relayed connection, so each side sees the link end at once
/// (the way a partition ends with a timeout, only sooner), and new connections are accepted and
/// closed straight away: a client with other servers to try moves on instead of waiting. While the
/// target is not yet known, new connections wait for it rather than fail.
pub struct TcpProxy {
    address: SocketAddr,
    link_tx: watch::Sender<Link>,
    accept_task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on a free port of 127.0.0.1; `target` may be set later with [`TcpProxy::set_target`].
    pub async fn start(target: Option<SocketAddr>) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind a proxy port on 127.0.0.1")?;
        let address = listener
            .local_addr()
            .context("failed to read the proxy's port")?;
        let (link_tx, link_rx) = watch::channel(Link { target, cut: false });
        let accept_task = tokio::spawn(accept_loop(listener, link_rx));
        Ok(TcpProxy {
            address,
            link_tx,
            accept_task,
        })
    }

    /// `127.0.0.1:<port>` that clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn set_target(&self, target: SocketAddr) {
        self.link_tx.send_modify(|link| link.target = Some(target));
    }

    /// Drops every relayed connection and refuses new ones until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.link_tx.send_modify(|link| link.cut = true);
    }

    pub fn heal(&self) {
        self.link_tx.send_modify(|link| link.cut = false);
    }

    pub fn is_cut(&self) -> bool {
        self.link_tx.borrow().cut
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Relay tasks end on their own: dropping `link_tx` wakes each one with a closed channel.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, link_rx: watch::Receiver<Link>) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(relay(inbound, link_rx.clone()));
            }
            Err(error) => {
                // Out of file descriptors or the like: the next accept may work, and a proxy that stops
                // accepting would look exactly like the partition it is meant to fake.
                tracing::warn!(%error, "proxy accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn relay(mut inbound: TcpStream, mut link_rx: watch::Receiver<Link>) {
    let target = loop {
        let link = *link_rx.borrow_and_update();
        if link.cut {
            return;
        }
        if let Some(target) = link.target {
            break target;
        }
        if link_rx.changed().await.is_err() {
            return;
        }
    };
    let Ok(Ok(mut outbound)) =
        tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target)).await
    else {
        return; // The target is down (e.g. a killed node): the client sees the connection end and retries.
    };
    // Routes and clients exchange small protocol lines; Nagle would add latency to every one.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let cut_or_proxy_dropped = async {
        loop {
            if link_rx.changed().await.is_err() || link_rx.borrow_and_update().cut {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = cut_or_proxy_dropped => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::TcpProxy;

    /// An echo server; returns its address.
    async fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        address
    }

    async fn echoes(stream: &mut TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await.is_ok() && &reply == b"ping"
    }

    #[tokio::test]
    async fn relays_until_cut_and_again_after_heal() {
        let proxy = TcpProxy::start(None).await.unwrap();
        let mut waiting = TcpStream::connect(proxy.address()).await.unwrap();
        // A connection made before the target is known waits for it.
        proxy.set_target(echo_server().await);
        assert!(echoes(&mut waiting).await);

        proxy.cut();
        let mut after_cut = [0u8; 1];
        assert_eq!(
            waiting.read(&mut after_cut).await.unwrap_or(0),
            0,
            "a cut ends live connections"
        );
        let mut refused = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(
            !echoes(&mut refused).await,
            "a cut proxy refuses new connections"
        );

        proxy.heal();
        let mut healed = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(echoes(&mut healed).await);
    }
}
