//! The NATS a `TestSystem` runs on: one nats-server, or a 3-node cluster started from `nats-config/`.

use crate::{NatsCluster, NatsServer};

pub enum TestNats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl TestNats {
    /// The single server, or the cluster's first node: its log and monitoring port.
    pub fn server(&self) -> &NatsServer {
        match self {
            TestNats::Single(server) => server,
            TestNats::Cluster(cluster) => cluster.node(0),
        }
    }

    /// The single server, to kill and restart; a cluster's nodes go through [`TestNats::cluster`].
    pub fn server_mut(&mut self) -> &mut NatsServer {
        match self {
            TestNats::Single(server) => server,
            TestNats::Cluster(_) => panic!("a cluster's nodes are killed through TestNats::cluster"),
        }
    }

    pub fn cluster(&mut self) -> Option<&mut NatsCluster> {
        match self {
            TestNats::Single(_) => None,
            TestNats::Cluster(cluster) => Some(cluster),
        }
    }

    /// Every client URL, comma-separated, as `NATTER_NATS_URL` takes them.
    pub fn client_urls(&self) -> String {
        match self {
            TestNats::Single(server) => server.client_url(),
            TestNats::Cluster(cluster) => cluster.client_urls(),
        }
    }

    /// An anonymous connection that knows every node, so it survives losing one.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        devservers::connect_nats(&self.client_urls()).await
    }
}
