//! What the Qdrant store sends, checked on the wire. No Qdrant server runs here, so a fake
//! one (gRPC over plaintext HTTP/2 on loopback) records every request, decodes it with the
//! client's own message types, and answers as Qdrant would. The shape of hybrid recall is
//! asserted on what actually left the client: the collection declares the sparse vector,
//! points carry it, and a search is a dense and a sparse prefetch fused by RRF.

use std::sync::{Arc, Mutex};

use agent::memory::qdrant::{CANDIDATES, DENSE, SPARSE};
use agent::memory::{Kind, MemorySettings, NewMemory, RecallQuery, Scope, VectorStore, lexical};
use prost::Message;
use proto::TaskId;
use qdrant_client::Payload;
use qdrant_client::qdrant::query::Variant;
use qdrant_client::qdrant::vector::Vector as VectorKind;
use qdrant_client::qdrant::vector_input::Variant as Input;
use qdrant_client::qdrant::vectors::VectorsOptions;
use qdrant_client::qdrant::vectors_config::Config;
use qdrant_client::qdrant::{
    CollectionConfig, CollectionExists, CollectionExistsResponse, CollectionInfo, CollectionOperationResponse,
    CollectionParams, CreateCollection, Fusion, GetCollectionInfoResponse, Modifier, PointsOperationResponse,
    QueryPoints, QueryResponse, ScoredPoint, SparseVector, UpdateResult, UpdateStatus, UpsertPoints,
};
use tokio::net::TcpListener;

const TEXT: &str = "Invoice K-7731 lists forty crates.";

/// Every request's path and message, in order.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
/// A prefetch as sent: the vector it uses, its input, its limit, whether it is scoped.
type Prefetch = (Option<String>, Option<Input>, Option<u64>, bool);

/// A fake Qdrant whose collection exists already (made before hybrid recall, or not) or
/// not at all, recording `(path, message)` of every request.
struct FakeQdrant {
    url: String,
    seen: Seen,
    server: tokio::task::JoinHandle<()>,
}

impl FakeQdrant {
    async fn start(existing: Option<CollectionInfo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, existing) = (recorded.clone(), existing.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let (seen, existing) = (seen.clone(), existing.clone());
                        tokio::spawn(async move {
                            let path = request.uri().path().to_owned();
                            let mut body = request.into_body();
                            let mut bytes = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                bytes.extend_from_slice(&chunk);
                            }
                            // A gRPC message: a compression flag and a 4-byte length first.
                            seen.lock()
                                .expect("lock")
                                .push((path.clone(), bytes.get(5..).unwrap_or_default().to_vec()));
                            let reply = answer(&path, existing.as_ref());
                            let head = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .expect("response");
                            let Ok(mut stream) = respond.send_response(head, false) else { return };
                            let mut framed = vec![0u8];
                            framed.extend(u32::try_from(reply.len()).expect("small").to_be_bytes());
                            framed.extend(reply);
                            let _ = stream.send_data(framed.into(), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let _ = stream.send_trailers(trailers);
                        });
                    }
                });
            }
        });
        Self { url, seen, server }
    }

    fn paths(&self) -> Vec<String> {
        self.seen.lock().expect("lock").iter().map(|(p, _)| p.clone()).collect()
    }

    /// The one request sent to `path`, decoded.
    fn one<M: Message + Default>(&self, path: &str) -> M {
        let seen = self.seen.lock().expect("lock");
        let mut sent = seen.iter().filter(|(p, _)| p == path);
        let (_, bytes) = sent.next().unwrap_or_else(|| panic!("no request to {path}"));
        assert!(sent.next().is_none(), "one request to {path}");
        M::decode(bytes.as_slice()).expect("decode")
    }
}

impl Drop for FakeQdrant {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(path: &str, existing: Option<&CollectionInfo>) -> Vec<u8> {
    let done = || PointsOperationResponse {
        result: Some(UpdateResult { operation_id: Some(1), status: UpdateStatus::Completed as i32 }),
        ..Default::default()
    };
    match path {
        "/qdrant.Collections/CollectionExists" => {
            CollectionExistsResponse { result: Some(CollectionExists { exists: existing.is_some() }), time: 0.0 }
                .encode_to_vec()
        }
        "/qdrant.Collections/Get" => GetCollectionInfoResponse { result: existing.cloned(), time: 0.0 }.encode_to_vec(),
        "/qdrant.Collections/Create" => CollectionOperationResponse { result: true, time: 0.0 }.encode_to_vec(),
        "/qdrant.Points/Query" => {
            let payload =
                Payload::try_from(serde_json::json!({"text": TEXT, "kind": "fact", "tick": 2})).expect("payload");
            let point = ScoredPoint { payload: payload.into(), score: 0.5, ..Default::default() };
            QueryResponse { result: vec![point], ..Default::default() }.encode_to_vec()
        }
        _ => done().encode_to_vec(),
    }
}

fn store(fake: &FakeQdrant) -> agent::memory::qdrant::QdrantStore {
    let settings = MemorySettings {
        qdrant_url: Some(fake.url.clone()),
        qdrant_api_key: None,
        qdrant_collection: "mem".into(),
        retention: None,
        top_k: 6,
    };
    agent::memory::qdrant::QdrantStore::new(&settings).expect("client").expect("configured")
}

fn memory() -> NewMemory {
    NewMemory { text: TEXT.into(), kind: Kind::Fact, tick: 2, url: None }
}

const QUERY: RecallQuery<'static> = RecallQuery { text: "where is K-7731", vector: &[0.0, 1.0, 0.0] };

#[tokio::test]
async fn a_new_collection_is_hybrid_and_searches_fuse_dense_and_sparse() {
    let fake = FakeQdrant::start(None).await;
    let s = store(&fake);
    let scope = Scope { task: TaskId::new(), user: "alice".into() };
    assert!(s.search(&scope, QUERY, 3).await.expect("search").is_empty(), "no collection, no memories");
    s.add(&scope, vec![(memory(), vec![1.0, 0.0, 0.0])]).await.expect("add");
    let found = s.search(&scope, QUERY, 3).await.expect("search");
    assert_eq!(found.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), vec![TEXT]);

    let mut expected = vec!["/qdrant.Collections/CollectionExists"; 2];
    expected.push("/qdrant.Collections/Create");
    expected.extend(["/qdrant.Points/CreateFieldIndex"; 3]);
    expected.extend(["/qdrant.Points/Upsert", "/qdrant.Points/Query"]);
    assert_eq!(fake.paths(), expected);

    let created: CreateCollection = fake.one("/qdrant.Collections/Create");
    let sparse = created.sparse_vectors_config.expect("a sparse vector is declared");
    assert_eq!(sparse.map[SPARSE].modifier, Some(Modifier::Idf as i32), "Qdrant applies the IDF");
    match created.vectors_config.and_then(|c| c.config) {
        Some(Config::ParamsMap(m)) => assert_eq!(m.map[DENSE].size, 3, "sized by the first embedding"),
        other => panic!("a named dense vector, got {other:?}"),
    }

    let upsert: UpsertPoints = fake.one("/qdrant.Points/Upsert");
    let named = match upsert.points[0].vectors.clone().and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vectors(n)) => n.vectors,
        other => panic!("named vectors, got {other:?}"),
    };
    let (indices, values) = lexical::sparse_document(TEXT).into_iter().unzip();
    assert_eq!(named[SPARSE].vector, Some(VectorKind::Sparse(SparseVector { indices, values })));
    assert!(matches!(&named[DENSE].vector, Some(VectorKind::Dense(d)) if d.data == [1.0, 0.0, 0.0]));

    let query: QueryPoints = fake.one("/qdrant.Points/Query");
    assert_eq!(query.query.and_then(|q| q.variant), Some(Variant::Fusion(Fusion::Rrf as i32)));
    assert_eq!(query.limit, Some(3));
    let prefetched: Vec<Prefetch> = query
        .prefetch
        .into_iter()
        .map(|p| {
            let input = match p.query.and_then(|q| q.variant) {
                Some(Variant::Nearest(v)) => v.variant,
                other => panic!("a nearest query, got {other:?}"),
            };
            (p.using, input, p.limit, p.filter.is_some_and(|f| f.must.len() == 2))
        })
        .collect();
    let (indices, values) = lexical::sparse_query(QUERY.text).into_iter().unzip();
    assert_eq!(
        prefetched,
        vec![
            (
                Some(DENSE.into()),
                Some(Input::Dense(qdrant_client::qdrant::DenseVector { data: QUERY.vector.to_vec() })),
                Some(CANDIDATES),
                true
            ),
            (Some(SPARSE.into()), Some(Input::Sparse(SparseVector { indices, values })), Some(CANDIDATES), true),
        ],
        "a dense and a sparse prefetch, each filtered by task and user"
    );
}

#[tokio::test]
async fn a_collection_from_before_hybrid_recall_is_used_vector_only() {
    let info = CollectionInfo {
        config: Some(CollectionConfig { params: Some(CollectionParams::default()), ..Default::default() }),
        ..Default::default()
    };
    let fake = FakeQdrant::start(Some(info)).await;
    let s = store(&fake);
    let scope = Scope { task: TaskId::new(), user: "alice".into() };
    s.add(&scope, vec![(memory(), vec![1.0, 0.0, 0.0])]).await.expect("add");
    assert_eq!(s.search(&scope, QUERY, 3).await.expect("search").len(), 1);
    assert_eq!(
        fake.paths(),
        vec![
            "/qdrant.Collections/CollectionExists",
            "/qdrant.Collections/Get",
            "/qdrant.Points/Upsert",
            "/qdrant.Points/Query"
        ]
    );
    let upsert: UpsertPoints = fake.one("/qdrant.Points/Upsert");
    assert!(matches!(
        upsert.points[0].vectors.clone().and_then(|v| v.vectors_options),
        Some(VectorsOptions::Vector(_))
    ));
    let query: QueryPoints = fake.one("/qdrant.Points/Query");
    assert!(query.prefetch.is_empty() && query.using.is_none(), "its one unnamed vector: {query:?}");
    assert!(matches!(query.query.and_then(|q| q.variant), Some(Variant::Nearest(_))));
}
