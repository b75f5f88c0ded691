// Lets rotator's identity manage the secrets of ONE Key Vault: the built-in role "Key Vault Secrets Officer"
// (b86a8fe4-44ce-4948-aee5-eccb2c155cd7), assigned at the vault's scope, not the resource group's.
// For vaults using the Azure RBAC permission model (enableRbacAuthorization: true).
//
//   az deployment group create -g <vault-resource-group> -f keyvault-secrets-officer.bicep \
//     -p vaultName=kv-prod-example principalId=<object id of rotator's managed identity or service principal>
//
// For least privilege use keyvault-rotator-role.bicep instead (four data actions, no delete or purge).

targetScope = 'resourceGroup'

@description('Name of the existing Key Vault rotator writes to (in this resource group).')
param vaultName string

@description('Object (principal) id of the identity rotator runs as: a managed identity (also the one behind an AKS workload identity) or a service principal.')
param principalId string

@description('ServicePrincipal for managed identities and service principals.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource rotatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: principalId
    principalType: principalType
    description: 'rotator: rotate Momento API keys stored in this vault'
  }
}

output roleAssignmentId string = rotatorSecretsOfficer.id
