// The four services of the contract, as generated for the TypeScript client and reused here.
export { ModelRegistryService } from "@gen/modelplane/v1/registry_pb.js";
export { DeploymentService } from "@gen/modelplane/v1/deployments_pb.js";
export { GuardrailService } from "@gen/modelplane/v1/guardrails_pb.js";
export { LogService } from "@gen/modelplane/v1/logs_pb.js";
