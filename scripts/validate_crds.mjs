// Validates the custom resources in rendered manifests (a JSON array of objects on stdin)
// against the published API schemas of their operators, as packaged by kubernetes-models
// (npm: @kubernetes-models/cloudnative-pg, cert-manager, prometheus-operator). Built-in kinds
// are kubernetes-validate's job; a custom kind this script does not know fails the check, so
// nothing goes unvalidated. Run by scripts/deploy-check.sh from the tools' npm directory.
const MODELS = {
  "postgresql.cnpg.io/v1": "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1",
  "cert-manager.io/v1": "@kubernetes-models/cert-manager/cert-manager.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => { text += chunk; });
  process.stdin.on("end", () => resolve(text));
}));

let failures = 0;
let checked = 0;
for (const { source, object } of input) {
  const where = `${source}: ${object.kind} ${object.metadata?.name}`;
  const base = MODELS[object.apiVersion];
  if (!base) {
    console.error(`${where}: no published schema known for ${object.apiVersion}`);
    failures++;
    continue;
  }
  let Model;
  try {
    Model = (await import(`${base}/${object.kind}`))[object.kind];
  } catch (e) {
    console.error(`${where}: no published schema for kind ${object.kind} (${e.message})`);
    failures++;
    continue;
  }
  try {
    new Model(object).validate();
    checked++;
  } catch (e) {
    console.error(`${where}: ${e.message}`);
    failures++;
  }
}
console.log(`custom resources: ${checked} valid, ${failures} invalid`);
process.exit(failures === 0 && checked > 0 ? 0 : 1);
