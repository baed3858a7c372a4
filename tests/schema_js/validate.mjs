// Validates instances against runsteps' exported JSON Schemas with ajv (Draft 2020-12, strict
// mode), as a consumer in Node.js would: `node validate.mjs <schema dir> <instances.json>`.
// <instances.json> is {"instances": [<value>, ...], "checks": {<name>: [<index>, ...]}}: each
// named schema (<name>.schema.json in the directory) is applied to the instances at those
// indices. The answer on stdout maps each name to one verdict per index: null when valid,
// else ajv's first error as text (for a schema ajv refuses to compile, the reason).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";

const [schemaDir, instancesPath] = process.argv.slice(2);
const { instances, checks } = JSON.parse(readFileSync(instancesPath, "utf8"));
const verdicts = {};
for (const [name, indices] of Object.entries(checks)) {
  const schema = JSON.parse(readFileSync(join(schemaDir, `${name}.schema.json`), "utf8"));
  // One Ajv per schema: the exported schemas carry no $id, each has its own $defs.
  const ajv = new Ajv2020({ strict: true, allErrors: false });
  let validate;
  try {
    validate = ajv.compile(schema);
  } catch (error) {
    verdicts[name] = indices.map(() => `schema does not compile: ${error.message}`);
    continue;
  }
  verdicts[name] = indices.map((index) => {
    if (validate(instances[index])) return null;
    const [first] = validate.errors;
    return `${first.instancePath || "<root>"} ${first.message} (${first.schemaPath})`;
  });
}
process.stdout.write(JSON.stringify(verdicts));
