//! The ledger's role traits implemented for a backend, once for both: each operation delegates
//! to the function of its role's file (`intake::accept`, `outbox::claim`…), which each backend
//! writes in its own SQL with the same name and signature. Only the search's id, session and
//! activity reads are named apart (`search.rs` holds both dialects).

/// Implements [`super::Ledger`] and every role trait for `$ledger`, in a backend's `mod.rs` (where
/// its role modules and the records' types are in scope).
macro_rules! impl_roles {
    ($ledger:ident, search: ($ids:ident, $sessions:ident, $activity:ident)) => {
        #[async_trait]
        impl Ledger for $ledger {
            async fn health(&self) -> Result<(), LedgerError> {
                sqlx::query(sql::HEALTH)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| db_error("health", e))
            }
        }

        #[async_trait]
        impl IntakeLedger for $ledger {
            async fn identity_salt(&self, offer: &super::SaltOffer) -> Result<String, LedgerError> {
                intake::identity_salt(self, offer).await
            }

            async fn accept(
                &self,
                inbound: Inbound,
                precedence: &Precedence,
            ) -> Result<Accepted, LedgerError> {
                intake::accept(self, inbound, precedence).await
            }

            async fn dossier(&self, dossier_id: &str) -> Result<Option<DossierRow>, LedgerError> {
                intake::dossier(self, dossier_id).await
            }

            async fn journal(&self, dossier_id: &str) -> Result<Vec<JournalEntry>, LedgerError> {
                intake::journal(self, dossier_id).await
            }

            async fn dossiers(
                &self,
                dossier_ids: &[String],
            ) -> Result<Vec<DossierRow>, LedgerError> {
                intake::dossiers(self, dossier_ids).await
            }

            async fn record_unreadable(&self, u: &Unreadable) -> Result<(), LedgerError> {
                intake::record_unreadable(self, u).await
            }

            async fn unreadable(
                &self,
                system: Option<passerelle_adapters::canonical::System>,
                since: Option<DateTime<Utc>>,
                limit: u32,
            ) -> Result<Vec<UnreadableRow>, LedgerError> {
                intake::unreadable(self, system, since, limit).await
            }
        }

        #[async_trait]
        impl DeliveryLedger for $ledger {
            async fn try_lease(
                &self,
                dossier_id: &str,
                holder: &str,
                ttl: Duration,
            ) -> Result<Lease, LedgerError> {
                deliveries::try_lease(self, dossier_id, holder, ttl).await
            }

            async fn release(&self, dossier_id: &str, holder: &str) -> Result<(), LedgerError> {
                deliveries::release(self, dossier_id, holder).await
            }

            async fn record_operation(
                &self,
                dossier_id: &str,
                destination: &str,
                op: &OperationRecord,
                delivered: &Delivered,
                ret: Option<&super::outbox::PendingReturn>,
            ) -> Result<(), LedgerError> {
                deliveries::record_operation(self, dossier_id, destination, op, delivered, ret)
                    .await
            }

            async fn settle_delivery(
                &self,
                dossier_id: &str,
                destination: &str,
                status: DeliveryStatus,
                desired_version: i64,
                waiting_for: &[Violation],
            ) -> Result<(), LedgerError> {
                deliveries::settle_delivery(
                    self,
                    dossier_id,
                    destination,
                    status,
                    desired_version,
                    waiting_for,
                )
                .await
            }

            async fn record_failure(
                &self,
                dossier_id: &str,
                destination: &str,
                error: &str,
            ) -> Result<i32, LedgerError> {
                deliveries::record_failure(self, dossier_id, destination, error).await
            }

            async fn operations(
                &self,
                dossier_id: &str,
                destination: &str,
            ) -> Result<Vec<OperationRecord>, LedgerError> {
                deliveries::operations(self, dossier_id, destination).await
            }

            async fn pending(
                &self,
                destination: &str,
                quiet_for: Duration,
                limit: i64,
            ) -> Result<Vec<String>, LedgerError> {
                deliveries::pending(self, destination, quiet_for, limit).await
            }

            async fn sessions(&self, states: &[State]) -> Result<Vec<SessionRef>, LedgerError> {
                deliveries::sessions(self, states).await
            }

            async fn deliveries(
                &self,
                destination: &str,
                dossier_ids: &[String],
            ) -> Result<Vec<(String, DeliveryRow)>, LedgerError> {
                deliveries::deliveries(self, destination, dossier_ids).await
            }
        }

        #[async_trait]
        impl DeadLetterLedger for $ledger {
            async fn dead_letter(
                &self,
                dossier_id: &str,
                destination: &str,
                reason: &DeadReason,
            ) -> Result<String, LedgerError> {
                dead_letters::dead_letter(self, dossier_id, destination, reason).await
            }

            async fn dead_letters(
                &self,
                filter: &DeadLetterFilter,
            ) -> Result<Vec<DeadLetter>, LedgerError> {
                dead_letters::dead_letters(self, filter).await
            }

            async fn replay(&self, dead_letter_id: &str) -> Result<Replayed, LedgerError> {
                dead_letters::replay(self, dead_letter_id).await
            }

            async fn replay_counted(
                &self,
                filter: &DeadLetterFilter,
                expected: Option<usize>,
            ) -> Result<Vec<Replayed>, LedgerError> {
                dead_letters::replay_counted(self, filter, expected).await
            }
        }

        #[async_trait]
        impl LotLedger for $ledger {
            async fn claim_lot(
                &self,
                destination: &str,
                lot_key: &str,
                limit: i64,
            ) -> Result<Option<LotRow>, LedgerError> {
                lots::claim_lot(self, destination, lot_key, limit).await
            }

            async fn lot(&self, lot_key: &str) -> Result<Option<LotRow>, LedgerError> {
                lots::lot(self, lot_key).await
            }

            async fn open_lots(&self, destination: &str) -> Result<Vec<LotRow>, LedgerError> {
                lots::open_lots(self, destination).await
            }

            async fn lot_submitted(
                &self,
                lot_key: &str,
                agora_lot: &str,
            ) -> Result<(), LedgerError> {
                lots::lot_submitted(self, lot_key, agora_lot).await
            }

            async fn settle_lot(
                &self,
                lot_key: &str,
                lines: &[LotLine],
                done: bool,
            ) -> Result<Vec<String>, LedgerError> {
                lots::settle_lot(self, lot_key, lines, done).await
            }

            async fn backfill_progress(
                &self,
                destination: &str,
            ) -> Result<BackfillProgress, LedgerError> {
                lots::backfill_progress(self, destination).await
            }
        }

        #[async_trait]
        impl CheckpointLedger for $ledger {
            async fn purge_payloads(&self, retention: Duration) -> Result<u64, LedgerError> {
                checkpoints::purge_payloads(self, retention).await
            }

            async fn checkpoint(&self, key: &str) -> Result<Option<i64>, LedgerError> {
                checkpoints::checkpoint(self, key).await
            }

            async fn set_checkpoint(&self, key: &str, value: i64) -> Result<(), LedgerError> {
                checkpoints::set_checkpoint(self, key, value).await
            }
        }

        #[async_trait]
        impl OutboxLedger for $ledger {
            async fn claim_returns(
                &self,
                limit: u32,
                claim: Duration,
            ) -> Result<Vec<super::outbox::DueReturn>, LedgerError> {
                outbox::claim(self, limit, claim).await
            }

            async fn settle_return(
                &self,
                return_id: &str,
                attempt: &super::outbox::ReturnAttempt,
            ) -> Result<(), LedgerError> {
                outbox::settle(self, return_id, attempt).await
            }

            async fn returns_of(
                &self,
                dossier_id: &str,
            ) -> Result<Vec<super::outbox::ReturnRow>, LedgerError> {
                outbox::of_dossier(self, dossier_id).await
            }

            async fn store_backfill_report(
                &self,
                counts: &serde_json::Value,
                gzip_json: &[u8],
            ) -> Result<String, LedgerError> {
                outbox::store_report(self, counts, gzip_json).await
            }

            async fn backfill_reports(
                &self,
                limit: u32,
            ) -> Result<Vec<super::outbox::ReportMeta>, LedgerError> {
                outbox::reports(self, limit).await
            }

            async fn backfill_report(
                &self,
                report_id: &str,
            ) -> Result<Option<Vec<u8>>, LedgerError> {
                outbox::report(self, report_id).await
            }
        }

        #[async_trait]
        impl ProgressLedger for $ledger {
            async fn lot_progress(
                &self,
                destination: &str,
                limit: u32,
            ) -> Result<Vec<super::progress::LotProgress>, LedgerError> {
                progress::lots(self, destination, limit).await
            }

            async fn input_progress(
                &self,
                limit: u32,
            ) -> Result<Vec<super::progress::InputProgress>, LedgerError> {
                progress::inputs(self, limit).await
            }
        }

        #[async_trait]
        impl SearchLedger for $ledger {
            async fn search(
                &self,
                filter: &super::search::SearchFilter,
            ) -> Result<super::search::SearchPage, LedgerError> {
                let ids = super::search::$ids(&self.pool, filter).await?;
                super::search::page(self, filter, ids).await
            }

            async fn session_numbers(&self) -> Result<Vec<String>, LedgerError> {
                super::search::$sessions(&self.pool).await
            }

            async fn activity(
                &self,
                since: DateTime<Utc>,
            ) -> Result<Vec<super::search::HourActivity>, LedgerError> {
                super::search::$activity(&self.pool, since).await
            }
        }
    };
}
