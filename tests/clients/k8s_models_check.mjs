// Validates custom resources against the schemas of the CRDs that define them, as the
// kubernetes-models packages ship them (generated from Karpenter's API types and KEDA's CRDs;
// pinned in package.json, installed by scripts/test.sh with `npm ci`):
//   node tests/clients/k8s_models_check.mjs FILE.json
// FILE holds a JSON array of objects. Karpenter's NodePool and EC2NodeClass (v1) and KEDA's
// ScaledObject and TriggerAuthentication (v1alpha1) are checked (types, required fields, enums,
// patterns); other kinds are skipped and counted. Exit 1 on any error, naming kind, name and path.
import { readFileSync } from "node:fs";
import { NodePool } from "@kubernetes-models/karpenter/karpenter.sh/v1/NodePool";
import { EC2NodeClass } from "@kubernetes-models/karpenter/karpenter.k8s.aws/v1/EC2NodeClass";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const models = {
  "karpenter.sh/v1 NodePool": NodePool,
  "karpenter.k8s.aws/v1 EC2NodeClass": EC2NodeClass,
  "keda.sh/v1alpha1 ScaledObject": ScaledObject,
  "keda.sh/v1alpha1 TriggerAuthentication": TriggerAuthentication,
};
const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const checked = {};
let skipped = 0;
const errors = [];
for (const doc of docs) {
  const Model = models[`${doc.apiVersion} ${doc.kind}`];
  if (!Model) {
    skipped++;
    continue;
  }
  checked[doc.kind] = (checked[doc.kind] ?? 0) + 1;
  try {
    new Model(doc).validate();
  } catch (e) {
    for (const err of e.errors ?? [{ instancePath: "", message: e.message }]) {
      errors.push(`${doc.kind} ${doc.metadata?.name}: ${err.instancePath || "/"}: ${err.message}`);
    }
  }
}
for (const e of errors) console.error(e);
const counts = Object.entries(checked).map(([k, n]) => `${n} ${k}`).join(", ");
console.log(errors.length ? `k8s models check: ${errors.length} errors` : `k8s models check: valid: ${counts}; ${skipped} of other kinds skipped`);
process.exit(errors.length ? 1 : 0);
