"""The GraphQL schema of RunPod's management API, as far as Tide serves it: the operations
the ``runpod`` SDK (1.12) sends (``get_gpus``, ``get_gpu``, ``create_template``,
``get_endpoints``, ``create_endpoint``, ``update_endpoint_template``) plus ``deleteEndpoint``,
``deleteTemplate`` and ``saveEndpoint`` with an ``id`` (an update), from RunPod's GraphQL
spec.  Type and field names are RunPod's; anything else fails validation, naming what it
asked for (graphql-core parses and validates; nothing here parses by hand).
"""

from __future__ import annotations

from typing import Final

from graphql import GraphQLSchema, build_schema

__all__ = ["SCHEMA", "SDL"]

SDL: Final = """
scalar Void

enum FlashBootType { OFF FLASHBOOT PRIORITY_FLASHBOOT }

type Query {
  myself: User
  gpuTypes(input: GpuTypeFilter): [GpuType]
}

type Mutation {
  saveTemplate(input: SaveTemplateInput!): PodTemplate
  deleteTemplate(templateName: String!): Void
  saveEndpoint(input: EndpointInput!): Endpoint
  deleteEndpoint(id: String!): Void
  updateEndpointTemplate(input: UpdateEndpointTemplateInput!): Endpoint
}

type User {
  id: String
  endpoints: [Endpoint]
  podTemplates: [PodTemplate]
}

type EnvironmentVariable { key: String value: String }
input EnvironmentVariableInput { key: String! value: String! }

type PodTemplate {
  id: String
  name: String
  imageName: String
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariable]
  isServerless: Boolean
}

input SaveTemplateInput {
  id: String
  name: String!
  imageName: String!
  dockerArgs: String
  containerDiskInGb: Int
  volumeInGb: Int
  volumeMountPath: String
  ports: String
  env: [EnvironmentVariableInput]
  isServerless: Boolean
  containerRegistryAuthId: String
  startSsh: Boolean
  startJupyter: Boolean
  isPublic: Boolean
  readme: String
}

type NetworkVolume { id: String dataCenterId: String }

type Endpoint {
  id: String
  name: String
  templateId: String
  template: PodTemplate
  gpuIds: String
  gpuCount: Int
  networkVolumeId: String
  networkVolume: NetworkVolume
  locations: String
  idleTimeout: Int
  scalerType: String
  scalerValue: Int
  workersMin: Int
  workersMax: Int
  workersStandby: Int
  executionTimeoutMs: Int
  allowedCudaVersions: String
  flashBootType: FlashBootType
  type: String
  aiKey: String
  userId: String
  version: Int
  env: [EnvironmentVariable]
  createdAt: String
}

input EndpointInput {
  id: String
  name: String
  templateId: String
  gpuIds: String
  gpuCount: Int
  networkVolumeId: String
  locations: String
  idleTimeout: Int
  scalerType: String
  scalerValue: Int
  workersMin: Int
  workersMax: Int
  executionTimeoutMs: Int
  allowedCudaVersions: String
  flashBootType: FlashBootType
  type: String
}

input UpdateEndpointTemplateInput { endpointId: String! templateId: String! }

input GpuTypeFilter { id: String ids: [String] }
input GpuLowestPriceInput { gpuCount: Int }

type LowestPrice { minimumBidPrice: Float uninterruptablePrice: Float }

type GpuType {
  id: String
  displayName: String
  manufacturer: String
  memoryInGb: Int
  cudaCores: Int
  maxGpuCount: Int
  secureCloud: Boolean
  communityCloud: Boolean
  securePrice: Float
  communityPrice: Float
  oneMonthPrice: Float
  threeMonthPrice: Float
  oneWeekPrice: Float
  communitySpotPrice: Float
  secureSpotPrice: Float
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}
"""

SCHEMA: Final[GraphQLSchema] = build_schema(SDL)
