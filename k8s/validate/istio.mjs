// Validates every Istio object in the YAML files given (rendered overlays, istioctl input)
// against Istio's CRD schemas: the validators @kubernetes-models/istio compiles from the
// openAPIV3Schema of Istio's CustomResourceDefinitions (pinned in package-lock.json). Fails on
// an Istio kind it has no schema for, on any schema error, and when no Istio object was seen.
// Other kinds are left to kubernetes-validate.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as networking from "@kubernetes-models/istio/networking.istio.io/v1";
import * as security from "@kubernetes-models/istio/security.istio.io/v1";
import * as install from "@kubernetes-models/istio/install.istio.io/v1alpha1";
import * as extensions from "@kubernetes-models/istio/extensions.istio.io/v1alpha1";

const models = {
  "networking.istio.io/v1": networking,
  "security.istio.io/v1": security,
  "install.istio.io/v1alpha1": install,
  "extensions.istio.io/v1alpha1": extensions,
};

// IstioOperator's CRD leaves spec.meshConfig free-form, so its schema checks nothing there.
// The extension providers' field names and types, from Istio's MeshConfig API
// (mesh/v1alpha1/config.proto, ExtensionProvider), checked here instead: no unknown field.
const PROVIDER_FIELDS = {
  envoyExtAuthzGrpc: {
    service: "string", port: "number", timeout: "string", failOpen: "boolean",
    clearRouteCache: "boolean", statusOnError: "string", includeRequestBodyInCheck: "object",
  },
  envoyExtAuthzHttp: {
    service: "string", port: "number", timeout: "string", pathPrefix: "string",
    failOpen: "boolean", clearRouteCache: "boolean", statusOnError: "string",
    includeHeadersInCheck: "object", includeRequestHeadersInCheck: "object",
    includeAdditionalHeadersInCheck: "object", includeRequestBodyInCheck: "object",
    headersToUpstreamOnAllow: "object", headersToDownstreamOnDeny: "object",
    headersToDownstreamOnAllow: "object",
  },
};

function checkProviders(obj) {
  for (const provider of obj.spec?.meshConfig?.extensionProviders ?? []) {
    const kinds = Object.keys(provider).filter((k) => k !== "name");
    if (typeof provider.name !== "string" || kinds.length !== 1) {
      throw new Error(`extension provider needs a name and exactly one kind: ${JSON.stringify(provider)}`);
    }
    const fields = PROVIDER_FIELDS[kinds[0]];
    if (!fields) throw new Error(`${provider.name}: unexpected provider kind ${kinds[0]}`);
    for (const [key, value] of Object.entries(provider[kinds[0]])) {
      if (!(key in fields)) throw new Error(`${provider.name}: unknown field ${key}`);
      if (typeof value !== fields[key]) throw new Error(`${provider.name}.${key}: must be a ${fields[key]}`);
    }
    for (const required of ["service", "port"]) {
      if (!(required in provider[kinds[0]])) throw new Error(`${provider.name}: ${required} is required`);
    }
  }
}

let checked = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.error(`${file}: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (!obj || !String(obj.apiVersion ?? "").includes("istio.io")) continue;
    const name = `${file}: ${obj.kind}/${obj.metadata?.name ?? "(unnamed)"}`;
    const Model = models[obj.apiVersion]?.[obj.kind];
    if (!Model) {
      console.error(`${name}: no Istio schema for ${obj.apiVersion} ${obj.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      if (obj.kind === "IstioOperator") checkProviders(obj);
      checked++;
      console.log(`${name}: valid`);
    } catch (e) {
      console.error(`${name}: ${e.message}`);
      failed++;
    }
  }
}
if (checked === 0 && failed === 0) {
  console.error("no Istio object found");
  process.exit(1);
}
process.exit(failed ? 1 : 0);
