# IAM for rotator on GCP Secret Manager with Terraform (google provider >= 5).
# Terraform creates the secrets and rotator only writes versions, annotations and aliases into them, so
# rotator needs no project-level permission at all.

variable "project_id" {
  type = string
}

variable "secret_ids" {
  description = "Secrets rotator writes (1-255 letters, digits, '-' and '_')."
  type        = list(string)
  default     = ["momento-checkout-api", "momento-reporting-env"]
}

variable "consumers" {
  description = "secret id => service account emails that read it"
  type        = map(list(string))
  default     = {}
}

variable "k8s_service_account" {
  description = "namespace/name of rotator's Kubernetes service account (GKE workload identity); null to skip"
  type        = string
  default     = "rotator/rotator"
}

resource "google_service_account" "rotator" {
  project      = var.project_id
  account_id   = "rotator"
  display_name = "Momento API key rotator"
}

# Exactly what rotator does to a secret (see rotator-secret-writer.yaml for the why of each permission).
resource "google_project_iam_custom_role" "rotator_secret_writer" {
  project     = var.project_id
  role_id     = "rotatorSecretWriter"
  title       = "Rotator secret writer"
  description = "Momento key rotator: secret metadata, aliases and annotations; add, read back, disable, destroy versions."
  permissions = [
    "secretmanager.secrets.get",
    "secretmanager.secrets.update",
    "secretmanager.versions.add",
    "secretmanager.versions.access",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
    "secretmanager.versions.enable",
    "secretmanager.versions.disable",
    "secretmanager.versions.destroy", # only with destroy_after
  ]
}

resource "google_secret_manager_secret" "momento" {
  for_each  = toset(var.secret_ids)
  project   = var.project_id
  secret_id = each.value

  replication {
    auto {}
  }

  labels = {
    managed-by = "rotator"
  }

  # rotator owns these: its labels (rotator-policy), its annotations (rotator-v<N>) and the aliases
  # current/previous change with every rotation
  lifecycle {
    ignore_changes = [labels, annotations, version_aliases]
  }
}

resource "google_secret_manager_secret_iam_member" "rotator" {
  for_each  = google_secret_manager_secret.momento
  project   = var.project_id
  secret_id = each.value.secret_id
  role      = google_project_iam_custom_role.rotator_secret_writer.id
  member    = "serviceAccount:${google_service_account.rotator.email}"
}

# Consumers only read: secretAccessor on their own secret.
resource "google_secret_manager_secret_iam_member" "consumer" {
  for_each = {
    for pair in flatten([
      for secret, emails in var.consumers : [for email in emails : { secret = secret, email = email }]
    ]) : "${pair.secret}/${pair.email}" => pair
  }
  project   = var.project_id
  secret_id = google_secret_manager_secret.momento[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value.email}"
}

# GKE workload identity: the Kubernetes service account acts as rotator's Google service account.
resource "google_service_account_iam_member" "workload_identity" {
  count              = var.k8s_service_account == null ? 0 : 1
  service_account_id = google_service_account.rotator.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_service_account}]"
}

# If rotator should create secrets itself instead, replace google_secret_manager_secret.* above with:
#
# resource "google_project_iam_custom_role" "rotator_secret_creator" {
#   project     = var.project_id
#   role_id     = "rotatorSecretCreator"
#   title       = "Rotator secret creator"
#   permissions = ["secretmanager.secrets.create"]
# }
# resource "google_project_iam_member" "rotator_create" {
#   project = var.project_id
#   role    = google_project_iam_custom_role.rotator_secret_creator.id
#   member  = "serviceAccount:${google_service_account.rotator.email}"
# }
# data "google_project" "this" { project_id = var.project_id }
# resource "google_project_iam_member" "rotator_write_momento_secrets" {
#   project = var.project_id
#   role    = google_project_iam_custom_role.rotator_secret_writer.id
#   member  = "serviceAccount:${google_service_account.rotator.email}"
#   condition {
#     title      = "rotator-momento-secrets"
#     expression = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/momento-\")"
#   }
# }

output "rotator_service_account" {
  value = google_service_account.rotator.email
}
