#!/usr/bin/env sh
# IAM for rotator on GCP Secret Manager with gcloud. A snippet to read and adapt, not a script to run blind.
set -eu

PROJECT=my-prod-project
PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
SA="rotator@${PROJECT}.iam.gserviceaccount.com"
SECRETS="momento-checkout-api momento-reporting-env"

# 1. rotator's identity
gcloud iam service-accounts create rotator --project "$PROJECT" --display-name "Momento API key rotator"

# 2. the custom role with exactly what rotator does to a secret
gcloud iam roles create rotatorSecretWriter --project "$PROJECT" --file deploy/gcp/rotator-secret-writer.yaml

# 3a. narrowest: create the secrets yourself, bind the role on each secret only
for s in $SECRETS; do
  gcloud secrets create "$s" --project "$PROJECT" --replication-policy automatic \
    --labels managed-by=rotator || true   # already there: fine
  gcloud secrets add-iam-policy-binding "$s" --project "$PROJECT" \
    --member "serviceAccount:$SA" --role "projects/$PROJECT/roles/rotatorSecretWriter"
done

# 3b. or let rotator create secrets: secrets.create on the project, and the writer role on the project
#     limited by an IAM condition to the secret ids rotator owns (here: ids starting with "momento-")
# gcloud iam roles create rotatorSecretCreator --project "$PROJECT" --file deploy/gcp/rotator-secret-creator.yaml
# gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
#   --role "projects/$PROJECT/roles/rotatorSecretCreator" --condition None
# gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
#   --role "projects/$PROJECT/roles/rotatorSecretWriter" \
#   --condition "expression=resource.name.startsWith(\"projects/${PROJECT_NUMBER}/secrets/momento-\"),title=rotator-momento-secrets"

# 3c. predefined roles only: roles/secretmanager.admin on each secret (broader: it can also change the
#     secret's IAM policy and delete it). secretVersionAdder + secretVersionManager + secretAccessor are NOT
#     enough: none of them has secretmanager.secrets.get / secretmanager.secrets.update.
# gcloud secrets add-iam-policy-binding momento-checkout-api --project "$PROJECT" \
#   --member "serviceAccount:$SA" --role roles/secretmanager.admin

# 4. consumers read the key: secretAccessor on their secret only
gcloud secrets add-iam-policy-binding momento-checkout-api --project "$PROJECT" \
  --member "serviceAccount:checkout@${PROJECT}.iam.gserviceaccount.com" --role roles/secretmanager.secretAccessor

# 5. run as the service account: GKE workload identity (Kubernetes service account rotator/rotator) ...
gcloud iam service-accounts add-iam-policy-binding "$SA" --project "$PROJECT" \
  --role roles/iam.workloadIdentityUser --member "serviceAccount:${PROJECT}.svc.id.goog[rotator/rotator]"
#    ... or Cloud Run / Compute Engine: deploy with --service-account "$SA" (the metadata server provides ADC).
echo "project number for IAM conditions: $PROJECT_NUMBER"
