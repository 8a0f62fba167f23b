//! OpenTelemetry traces from the real binary to an in-test OTLP receiver: the caller's W3C
//! `traceparent` (gRPC metadata on the native API, a request header on ext_authz) is the
//! parent of the check's span, which carries the decision and never a token.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use iot_authz::proto::iotauthz::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

const LINE_1: &str =
    "/subscriptions/s1/resourceGroups/factory/providers/Microsoft.Edge/targets/line-1";

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    self.spans.lock().unwrap().push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn check_spans_join_the_callers_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let otlp = format!("http://{otlp}");
    let (mut child, grpc, _) = crate::support::serve_binary(
        [""; 0],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_SERVICE_NAME", "iot-authz-under-test"),
        ],
    );
    let grpc = format!("http://{grpc}");

    // Native API: traceparent in gRPC metadata.
    let native_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = tonic::Request::new(pb::CheckRequest {
        principal: "user:alice@contoso.com".into(),
        action: "Microsoft.Edge/targets/read".into(),
        scope: LINE_1.into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{native_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let mut client = pb::authorizer_client::AuthorizerClient::connect(grpc.clone())
        .await
        .unwrap();
    assert!(client.check(request).await.unwrap().into_inner().allowed);

    // ext_authz: traceparent among the request headers Envoy forwards.
    let envoy_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        "traceparent".to_owned(),
        format!("00-{envoy_trace}-00f067aa0ba902b7-01"),
    );
    headers.insert(
        "x-iotauthz-principal".to_owned(),
        "user:alice@contoso.com".to_owned(),
    );
    headers.insert(
        "authorization".to_owned(),
        "Bearer very-secret-token".to_owned(),
    );
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "PUT".into(),
                    path: LINE_1.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut ext = AuthorizationClient::connect(grpc).await.unwrap();
    let response = ext.check(check).await.unwrap().into_inner();
    assert_eq!(response.status.unwrap().code, 7);

    // SIGTERM flushes the exporter before exit.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = receiver.spans.lock().unwrap().clone();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans received: {spans:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |trace: &str| {
        spans
            .iter()
            .find(|(_, s)| hex(&s.trace_id) == trace)
            .unwrap_or_else(|| panic!("no span in trace {trace}: {spans:?}"))
    };
    let (service, native) = find(native_trace);
    assert_eq!(service, "iot-authz-under-test");
    assert_eq!(hex(&native.parent_span_id), "b7ad6b7169203331");
    assert_eq!(native.name, "authz.check");
    assert_eq!(attr(native, "decision").as_deref(), Some("allow"));
    assert_eq!(attr(native, "reason").as_deref(), Some("roleAssignment"));
    assert_eq!(
        attr(native, "action").as_deref(),
        Some("Microsoft.Edge/targets/read")
    );
    assert_eq!(attr(native, "scope").as_deref(), Some(LINE_1));
    assert_eq!(attr(native, "revision").map(|r| r.len()), Some(64));
    let (_, ext_span) = find(envoy_trace);
    assert_eq!(hex(&ext_span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(attr(ext_span, "decision").as_deref(), Some("deny"));
    assert_eq!(attr(ext_span, "reason").as_deref(), Some("noGrant"));
    let everything = format!("{spans:?}");
    assert!(
        !everything.contains("very-secret-token"),
        "a token reached a span"
    );
}
