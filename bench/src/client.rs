//! A minimal pipelined Kafka client over a glommio TCP stream.
//!
//! Contract: requests are written in order with increasing correlation ids; responses are
//! read in order (Kafka answers in request order) and checked against the expected id. The
//! calls themselves wait as long as the broker takes; [`bounded`] caps one step (the load
//! generator caps every connect, send and answer with it), failing with
//! [`ClientError::Stalled`].

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Anything that can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no {what} within {ms} ms: the broker is stalled or unreachable")]
    Stalled { what: &'static str, ms: u64 },
}

/// `step`, or [`ClientError::Stalled`] naming `what` if it has not finished within `limit`.
pub async fn bounded<T>(
    limit: std::time::Duration,
    what: &'static str,
    step: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    futures_lite::future::or(step, async {
        glommio::timer::sleep(limit).await;
        Err(ClientError::Stalled { what, ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) })
    })
    .await
}

/// The writing half: encodes and sends requests.
pub struct Sender {
    w: WriteHalf<TcpStream>,
    next_corr: i32,
    buf: BytesMut,
    client_id: &'static str,
}

/// The reading half: reads responses in order.
pub struct Receiver {
    r: ReadHalf<TcpStream>,
}

pub async fn connect(addr: &str) -> Result<(Sender, Receiver), ClientError> {
    let s = TcpStream::connect(addr).await.map_err(|e| ClientError::Io(e.into()))?;
    s.set_nodelay(true).map_err(|e| ClientError::Io(e.into()))?;
    let (r, w) = s.split();
    Ok((
        Sender {
            w,
            next_corr: 1,
            buf: BytesMut::with_capacity(sluice_core::limits::CLIENT_REQUEST_BUFFER_BYTES),
            client_id: "sluice-bench",
        },
        Receiver { r },
    ))
}

impl Sender {
    /// The client id sent in every request header (default `sluice-bench`).
    pub fn set_client_id(&mut self, id: &'static str) {
        self.client_id = id;
    }

    /// Sends a request at `version`; returns its correlation id.
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, ClientError> {
        let corr = self.next_corr;
        self.next_corr = self.next_corr.wrapping_add(1);
        self.buf.clear();
        self.buf.put_i32(0);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        header.encode(&mut self.buf, R::header_version(version)).map_err(|e| ClientError::Protocol(e.to_string()))?;
        req.encode(&mut self.buf, version).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let len = (self.buf.len() - 4) as i32;
        self.buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.w.write_all(&self.buf).await?;
        Ok(corr)
    }
}

impl Receiver {
    /// Reads the next response, which must carry `corr`, and decodes it.
    pub async fn recv<R: Request>(&mut self, corr: i32, version: i16) -> Result<R::Response, ClientError> {
        let mut size = [0u8; 4];
        self.r.read_exact(&mut size).await?;
        let size = i32::from_be_bytes(size);
        let Some(size) =
            usize::try_from(size).ok().filter(|s| (1..=sluice_core::limits::MAX_CLIENT_RESPONSE_BYTES).contains(s))
        else {
            return Err(ClientError::Protocol(format!("response size {size}")));
        };
        let mut frame = BytesMut::zeroed(size);
        self.r.read_exact(&mut frame).await?;
        let mut frame: Bytes = frame.freeze();
        let hv = <R::Response as HeaderVersion>::header_version(version);
        let header = ResponseHeader::decode(&mut frame, hv).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if header.correlation_id != corr {
            return Err(ClientError::Protocol(format!(
                "expected correlation id {corr}, got {}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut frame, version).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// One request and its response, without pipelining.
pub async fn call<R: Request>(
    tx: &mut Sender,
    rx: &mut Receiver,
    req: &R,
    version: i16,
) -> Result<R::Response, ClientError> {
    let corr = tx.send(req, version).await?;
    rx.recv::<R>(corr, version).await
}
