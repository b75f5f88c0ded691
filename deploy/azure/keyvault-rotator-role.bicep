// Least-privilege alternative to "Key Vault Secrets Officer": a custom role with exactly the data actions
// rotator uses, assigned at ONE vault's scope. Officer also allows delete, purge, backup, restore and
// recover, none of which rotator ever calls.
//
//   az deployment group create -g <vault-resource-group> -f keyvault-rotator-role.bicep \
//     -p vaultName=kv-prod-example principalId=<object id of rotator's identity>
//
// What each data action is for (and the access-policy permission it matches):
//   secrets/readMetadata/action  list a secret's versions (secrets it does not track yet) (secrets: list)
//   secrets/getSecret/action     read the latest version; read a version back      (secrets: get)
//   secrets/setSecret/action     write a new version (one per new key)            (secrets: set)
//   secrets/update/action        disable old versions; update the tracking tag    (secrets: set)
// Vaults still on access policies: grant the secret permissions get, list and set instead.

targetScope = 'resourceGroup'

@description('Name of the existing Key Vault rotator writes to (in this resource group).')
param vaultName string

@description('Object (principal) id of the identity rotator runs as.')
param principalId string

@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

@description('Role names are unique per tenant: one role per resource group by default.')
param roleName string = 'rotator Key Vault secret rotation (${resourceGroup().name})'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource rotatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, roleName)
  properties: {
    roleName: roleName
    description: 'Write new secret versions, read them back, list versions and disable old ones. No delete, purge, backup, restore or recover.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/secrets/readMetadata/action'
          'Microsoft.KeyVault/vaults/secrets/getSecret/action'
          'Microsoft.KeyVault/vaults/secrets/setSecret/action'
          'Microsoft.KeyVault/vaults/secrets/update/action'
        ]
        notDataActions: []
      }
    ]
  }
}

// role definition ids are subscription-level, whatever scope the definition was created at
var rotatorRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', guid(resourceGroup().id, roleName))

resource rotatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, rotatorRoleId)
  scope: vault
  dependsOn: [
    rotatorRole
  ]
  properties: {
    roleDefinitionId: rotatorRoleId
    principalId: principalId
    principalType: principalType
    description: 'rotator: rotate Momento API keys stored in this vault'
  }
}

output roleDefinitionId string = rotatorRoleId
