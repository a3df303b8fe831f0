//! The bodies of the API as schemas of the OpenAPI document: what the handlers answer (built with
//! `json!`, so described here field by field), the query parameters they read, the problem
//! answers they share, and the payloads whose JSON Schema is a file of `passerelle-schemas`.
//!
//! Field docs are the document's descriptions: they are written for the API's users.

use std::collections::BTreeMap;

use passerelle_schemas::SchemaId;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, PartialSchema, ToResponse, ToSchema};

/// A payload whose schema is a file under `schemas/json/`: the component is a placeholder here,
/// replaced by the file's text when the document is assembled (see [`super::document`]), so that
/// the file stays the one source of that schema.
macro_rules! file_schema {
    ($($name:ident => $id:expr),+ $(,)?) => {
        $(
            #[doc = concat!("The schema `", stringify!($name), "`, a file of `passerelle-schemas`.")]
            #[derive(Debug)]
            pub struct $name;
            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new().description(Some($id.file())).into()
                }
            }
            impl ToSchema for $name {}
        )+
        /// The components taken from `schemas/json/`, by name.
        pub const FILE_SCHEMAS: &[(&str, SchemaId)] = &[$((stringify!($name), $id)),+];
    };
}

file_schema! {
    Dossier => SchemaId::Dossier,
}

/// One violation of a rejected body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Violation {
    /// JSON pointer, or XPath-like path into XML
    pub pointer: String,
    /// Stable dotted rule code (docs/rules.md)
    pub rule: String,
    pub detail: String,
}

/// `Problem.truncated`: only ever `true` (JSON Schema `enum: [true]`), present only when set. A
/// schema of its own (`schema_with`), which takes the description with it.
pub fn truncated() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .description(Some(
            "Present (true) only when `errors` is cut short: its last entry, of rule `xml.truncated`, says how many more violations were found (at most 100 are listed per dossier, an orientation being one, and 1,000 per document) or where decoding stopped at its time budget. The rule is named after XML but marks a cut-short list in either format.",
        ))
        .into()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accepted {
    Accepted,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DossierAcceptance {
    Accepted,
    OutOfPerimeter,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DossierAccepted {
    pub dossier_id: String,
    #[schema(inline)]
    pub status: DossierAcceptance,
}

/// `202` to ATEXO SEM: each dossier of the export, accepted or out of perimeter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DossiersAccepted {
    pub message_id: String,
    #[schema(inline)]
    pub dossiers: Vec<DossierAccepted>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadKind {
    Rejected,
    Exhausted,
    Irreconcilable,
}

/// Why, by kind: `rejected` (AGORA's anomalies), `exhausted` (the last transient failure), `irreconcilable`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadDetail {
    #[schema(inline, required = false)]
    pub kind: DeadKind,
}

/// A dead letter: a dossier AGORA refused, or that could not be delivered.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub dossier_id: String,
    pub destination: String,
    /// The code to filter on: an AGORA anomaly code, `http.<status>`, `transport` or `lifecycle.irreconcilable`.
    pub reason: String,
    #[schema(inline)]
    pub detail: DeadDetail,
    pub attempts: u32,
    pub first_failure: chrono::DateTime<chrono::Utc>,
    pub last_failure: chrono::DateTime<chrono::Utc>,
    /// When it was replayed; null while it waits for an operator.
    #[schema(required = false)]
    pub replayed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The attempt its replay opened.
    #[schema(required = false)]
    pub replay_id: Option<String>,
    /// The replay whose attempt ended in this dead letter; null when that attempt was not a replay's.
    #[schema(required = false)]
    pub after_replay: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Replaying {
    Replaying,
}

/// A dead letter replayed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// The dead letter replayed.
    pub id: String,
    pub dossier_id: String,
    pub destination: String,
    /// The new attempt: the AGORA calls it makes and a dead letter ending it carry this id.
    pub replay_id: String,
    pub replayed_at: chrono::DateTime<chrono::Utc>,
    /// Whether the broker confirmed the dossier's task (if not, the sweeper enqueues it later).
    pub queued: bool,
    #[schema(inline, required = false)]
    pub status: Replaying,
}

/// The filter of a bulk replay: every field given must match.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    json!({"code": "AG-CERTIF"}),
    json!({"destination": "agora", "since": "2019-09-01T00:00:00Z"}),
    json!({"all": true}),
))]
pub struct ReplayFilter {
    #[schema(min_length = 1, nullable = false)]
    pub destination: Option<String>,
    #[schema(min_length = 1, nullable = false)]
    pub code: Option<String>,
    #[schema(nullable = false)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(nullable = false)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(min_length = 1, nullable = false)]
    pub dossier_id: Option<String>,
    /// Required (true) when no filter is given: replay every dead letter.
    #[schema(nullable = false)]
    pub all: Option<bool>,
}

/// `202` to a bulk replay: how many and which.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedMany {
    pub count: u32,
    /// The dead letters replayed, oldest failure first.
    pub ids: Vec<String>,
    pub replayed: Vec<Replayed>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonalData {
    Masked,
    Shown,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    Sync,
    Backfill,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Incomplete,
    OutOfPerimeter,
    Dead,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgoraDelivery {
    #[schema(inline, required = false)]
    pub status: DeliveryStatus,
    #[schema(value_type = Object, required = false)]
    pub delivered: serde_json::Value,
    #[schema(required = false)]
    pub delivered_version: u64,
    #[schema(required = false)]
    pub attempts: u32,
    #[schema(required = false)]
    pub last_error: Option<String>,
    #[schema(required = false)]
    pub waiting_for: Vec<Violation>,
    /// The replay whose attempt is under way.
    #[schema(required = false)]
    pub replay_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    #[schema(inline, required = false)]
    pub agora: AgoraDelivery,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceMessage {
    #[schema(required = false)]
    pub message_id: String,
    #[schema(required = false)]
    pub system: String,
    #[schema(required = false)]
    pub flow: String,
    #[schema(required = false)]
    pub payload_hash: String,
    #[schema(required = false)]
    pub received_at: chrono::DateTime<chrono::Utc>,
    #[schema(required = false)]
    pub dossier_ids: Vec<String>,
    #[schema(required = false)]
    pub request_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgoraCall {
    #[schema(required = false)]
    pub operation: String,
    /// HTTP status; null for a transport failure.
    #[schema(required = false)]
    pub status: Option<u16>,
    #[schema(required = false)]
    pub outcome: String,
    #[schema(required = false)]
    pub numero_agora: Option<String>,
    #[schema(required = false)]
    pub at: chrono::DateTime<chrono::Utc>,
    /// Present when the call belongs to a replay's attempt.
    #[schema(required = false)]
    pub replay_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReturnStatus {
    Pending,
    Sent,
    Refused,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AtexoReturn {
    /// Sent as the `Idempotency-Key` header of the post: ATEXO SEM can deduplicate on it.
    #[schema(required = false)]
    pub return_id: String,
    /// ATEXO SEM's dossier id.
    #[schema(required = false)]
    pub atexo_dossier: String,
    #[schema(required = false)]
    pub numero_agora: Option<String>,
    /// AGORA's state code after the answer.
    #[schema(required = false)]
    pub etat: Option<String>,
    #[schema(required = false)]
    pub anomaly_codes: Vec<String>,
    #[schema(inline, required = false)]
    pub status: ReturnStatus,
    /// Posts made so far.
    #[schema(required = false)]
    pub attempts: u32,
    #[schema(required = false)]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[schema(required = false)]
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(required = false)]
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The source messages that shaped the dossier, oldest first.
    #[schema(inline, required = false)]
    pub messages: Vec<SourceMessage>,
    /// Each AGORA call with its answer, oldest first.
    #[schema(inline, required = false)]
    pub operations: Vec<AgoraCall>,
    #[schema(required = false)]
    pub dead_letters: Vec<DeadLetter>,
    /// The returns to ATEXO SEM that AGORA's answers made (contract §4), oldest first, from the ledger's outbox. No `libelle` (it may quote personal data).
    #[schema(inline, required = false)]
    pub returns: Vec<AtexoReturn>,
}

/// A dossier's trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct DossierTrace {
    pub dossier_id: String,
    /// The merged canonical dossier (the `Dossier` schema, schemas/json/dossier.schema.json), personal fields masked unless `personal_data` is `shown`.
    #[schema(value_type = Object)]
    pub dossier: serde_json::Value,
    #[schema(inline)]
    pub personal_data: PersonalData,
    pub desired_version: u64,
    #[schema(inline, required = false)]
    pub flow: Flow,
    #[schema(required = false)]
    pub in_perimeter: bool,
    #[schema(inline)]
    pub delivery: Delivery,
    #[schema(inline)]
    pub history: History,
}

/// What a polled source sent that could not be read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unreadable {
    pub id: String,
    /// The source system (`pole-emploi`).
    pub system: String,
    /// Where it was read: for Pôle emploi, the session polled (`numeroFormation`, `numeroAction`, `numeroSession`).
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    /// The item as sent, the job seeker's identifiers as `***` and fields the system does not define only by their JSON type; null when the whole answer was unreadable.
    pub masked_item: serde_json::Value,
    pub violations: Vec<Violation>,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
    /// How many polls read it.
    pub seen: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceId {
    #[schema(required = false)]
    pub system: String,
    #[schema(required = false)]
    pub id: String,
    #[schema(required = false)]
    pub version: Option<u32>,
}

/// A search result: identifiers and states, no personal value.
#[derive(Debug, Serialize, ToSchema)]
pub struct DossierSummary {
    pub dossier_id: String,
    /// The canonical state.
    pub state: String,
    /// The delivery status toward AGORA.
    pub delivery: String,
    /// AGORA's number, once AGORA holds the dossier.
    #[schema(required = false)]
    pub numero_agora: Option<String>,
    /// AGORA's state code (`CREE`, `ENTRE`, `SORTI`, `SOLDE`, `ANNULE`).
    #[schema(required = false)]
    pub agora_state: Option<String>,
    pub funders: Vec<u8>,
    pub session: String,
    #[schema(inline)]
    pub sources: Vec<SourceId>,
    #[schema(inline)]
    pub flow: Flow,
    pub in_perimeter: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page of the search.
#[derive(Debug, Serialize, ToSchema)]
pub struct DossierPage {
    pub dossiers: Vec<DossierSummary>,
    /// The next page's `cursor`; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    Ok,
    Failing,
    Unknown,
    Off,
    Degraded,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Part {
    #[schema(inline)]
    pub status: PartState,
    #[schema(required = false)]
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    Stopped,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskBeat {
    #[schema(inline)]
    pub status: TaskState,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_age_ms: u64,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(inline)]
    pub status: ReadyStatus,
    /// When the checks were made: an answer is served again for up to a second.
    pub checked_at: chrono::DateTime<chrono::Utc>,
    #[schema(inline)]
    pub ledger: Part,
    #[schema(inline)]
    pub queue: Part,
    /// Each long-running task (worker lanes, sweeper, Pôle emploi poller, AGORA check) by name. A `stopped` task gates readiness, and `serve` exits non-zero to be restarted; an old heartbeat is reported, not gating.
    #[schema(inline)]
    pub tasks: BTreeMap<String, TaskBeat>,
    /// AGORA's last background check and the authenticator in use (never a token). Reported, never gating: a replica keeps accepting while AGORA is down.
    #[schema(value_type = Object)]
    pub agora: serde_json::Value,
    /// The poller's outcomes (`off` when not configured). Reported, never gating.
    #[schema(value_type = Object)]
    pub pole_emploi: serde_json::Value,
    /// Each posting system by its snake_case name (`atexo_sem`): its posts since this replica started. Reported, never gating.
    #[schema(inline)]
    pub systems: BTreeMap<String, PostingHealth>,
}

/// A posting system's posts since this replica started, in `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostingHealth {
    /// `idle` before its first post, `refusing` while its latest post was refused, `ok` otherwise.
    #[schema(inline)]
    pub status: PostingStatus,
    /// Posts accepted (202) since start.
    pub accepted: u64,
    /// Posts refused with a 4xx since start, once the caller was checked to be the system (an anonymous post, or one with another system's token, is not counted; nor is a 503, this replica's).
    pub refused: u64,
    pub last_accepted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The latest refusal: when, its status and its problem type.
    #[schema(value_type = Option<Object>)]
    pub last_refusal: Option<serde_json::Value>,
    /// ATEXO SEM's only: the sender of its returns (`status` `off` without `atexo_sem.returns_url`, else `idle`, `ok` or `failing`; `sent`, `failed`, `last_sent_at`, `last_failure`).
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostingStatus {
    Idle,
    Ok,
    Refusing,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Prescribed,
    Registered,
    Validated,
    Entered,
    Exited,
    ServiceDone,
    Settled,
    Refused,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(default = "json")]
pub enum Format {
    Json,
    Csv,
}

/// The search's query (`GET /v1/dossiers`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// A source record's id in its system (an ATEXO SEM reference, an orientation id), a Pôle emploi `idInscription`, an AGORA number or a dossier id, matched exactly. With `auth.tokens.admin_personal_data` only, also a NIR (13 or 15 characters), matched on the dossier ids derived from it (salted hashes), never in clear.
    #[param(nullable = false)]
    pub q: Option<String>,
    /// The canonical state.
    #[param(inline, nullable = false)]
    pub state: Option<State>,
    /// The delivery status toward AGORA.
    #[param(inline, nullable = false)]
    pub delivery: Option<DeliveryStatus>,
    /// A funder (LHEO `dict-financeurs` code) among the dossier's fundings.
    #[param(minimum = 0, maximum = 20, nullable = false)]
    pub funder: Option<u8>,
    /// The Intercarif session number (`numeroSession`).
    #[param(nullable = false)]
    pub session: Option<String>,
    /// The code of one of the dossier's dead letters (replayed or not): an AGORA anomaly code, `http.<status>`, `transport` or `lifecycle.irreconcilable`.
    #[param(nullable = false)]
    pub code: Option<String>,
    /// Last changed at or after (RFC 3339, or a date `YYYY-MM-DD`: midnight UTC).
    #[param(nullable = false)]
    pub since: Option<String>,
    /// Last changed before (RFC 3339, or a date `YYYY-MM-DD`: midnight UTC).
    #[param(nullable = false)]
    pub until: Option<String>,
    /// The `next_cursor` of the previous page (opaque).
    #[param(nullable = false)]
    pub cursor: Option<String>,
    /// The page's size.
    #[param(minimum = 1, maximum = 500, default = 50, nullable = false)]
    pub limit: Option<u32>,
    /// `csv` for CSV (as `Accept: text/csv`); the next page's cursor is then in the `X-Next-Cursor` header.
    #[param(inline, nullable = false)]
    pub format: Option<Format>,
}

/// The CSV of a search.
#[derive(Debug)]
pub struct DossiersCsv;

impl PartialSchema for DossiersCsv {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "A header line `dossier_id,state,delivery,numero_agora,agora_state,funders,session,sources,updated_at`, then one line per dossier (funders and sources separated by spaces, each source as `system:id`).",
            ))
            .into()
    }
}

impl ToSchema for DossiersCsv {}

/// The dead letters' filters (`GET /v1/dead-letters`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only toward this destination (`agora`).
    #[param(nullable = false)]
    pub destination: Option<String>,
    /// Only with this reason code: an AGORA anomaly code (`AG-…`), `http.<status>`, `transport` or `lifecycle.irreconcilable`.
    #[param(nullable = false)]
    pub code: Option<String>,
    /// Only those dead-lettered at or after this time (RFC 3339).
    #[param(nullable = false)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those dead-lettered before this time (RFC 3339).
    #[param(nullable = false)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this dossier's.
    #[param(nullable = false)]
    pub dossier_id: Option<String>,
    /// Also the dead letters already replayed.
    #[param(default = false, nullable = false)]
    pub include_replayed: Option<bool>,
}

/// A system's name (`System::as_str`), one of the registry's.
#[derive(Debug, Deserialize)]
pub struct SystemName(pub String);

impl PartialSchema for SystemName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                passerelle_adapters::canonical::System::ALL
                    .iter()
                    .map(|s| s.as_str()),
            ))
            .into()
    }
}

impl ToSchema for SystemName {}

/// The unreadable messages' filters (`GET /v1/unreadable`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnreadableQuery {
    /// Only this system's (`pole-emploi`).
    #[param(inline, nullable = false)]
    pub system: Option<SystemName>,
    /// Only those last seen at or after this time (RFC 3339).
    #[param(nullable = false)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many.
    #[param(minimum = 1, maximum = 1000, default = 100, nullable = false)]
    pub limit: Option<u32>,
}

/// An `application/problem+json` answer with `description`.
pub fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The problem answers several routes share, each with its one description.
macro_rules! problem_responses {
    ($($name:ident: $description:literal),+ $(,)?) => {
        $(
            #[doc = concat!("A problem answer: ", $description, ".")]
            #[derive(Debug)]
            pub struct $name;
            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), problem($description).into())
                }
            }
        )+
    };
}

problem_responses! {
    Unparseable: "Unparseable body",
    Unauthorized: "Missing or invalid credentials or signature",
    Forbidden: "Another system's route",
    WrongContentType: "Wrong content type",
    RateLimited: "Over the per-system rate",
    Unavailable: "Not ready: nothing was accepted, retry",
}
