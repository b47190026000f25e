// Ruru (GraphiQL at /graphiql) as a newcomer first sees it: the query editor opens on a ballast example (the latest
// jobs with their steps; a submission and a live subscription commented out below it), the headers pane holds the
// shape of the token header, and the comments at the top say how to mint a token and where to paste it. Ruru shows
// these only when the browser has nothing saved (a first visit, or after clearing the site's data); a user's own
// tabs are never overwritten. Without a token the schema cannot even be introspected (introspection.ts): the
// answer to the first request then says the same thing again.
import type { JwtSettings } from './config.ts';
import { MINT_COMMAND } from './guidance.ts';

/** The query the editor opens on; test/graphql-descriptions.test.ts runs it. */
export const EXAMPLE_QUERY = `query LatestJobs {
  jobs(first: 5, orderBy: CREATED_AT_DESC) {
    totalCount
    nodes {
      id pipeline status createdAt finishedAt result error
      steps(first: 10) { nodes { name status attemptCount error } }
    }
  }
}`;

/** Shown commented out under it (an operator token may run both; a client too, for its own tenant). */
export const EXAMPLE_MUTATION = `mutation SubmitOne {
  submitJob(input: { pipeline: "demo.wordstats", input: { text: "the cat sat on the mat" } }) {
    jobId created status
  }
}`;

export const EXAMPLE_SUBSCRIPTION = `subscription FollowJob {
  jobUpdated(jobId: "1") { type eventId stepName status job { status result } }
}`;

/** What goes in the headers pane: the header, with the place of the token marked. */
export const HEADERS_TEMPLATE = '{"Authorization": "Bearer <token>"}';

const commentOut = (text: string) => text.split('\n').map((line) => `# ${line}`).join('\n');

/** The editor's first content: how to get and set a token, then the examples. */
export function defaultQuery(jwt: Pick<JwtSettings, 'secret' | 'jwksUrl'>): string {
  const howTo = jwt.secret || !jwt.jwksUrl
    ? [
        '# 1. Mint a token, in a terminal in the ballast folder:',
        `#      ${MINT_COMMAND} --role operator`,
        '#    (--role client --tenant <tenant>: one tenant only; --role reporter: read only)',
      ]
    : ['# 1. Get a token from your identity provider (this server checks tokens against BALLAST_JWKS_URL).'];
  return [
    '# ballast GraphQL API. Every request needs a token (a JWT).',
    '#',
    ...howTo,
    '# 2. Paste it into the Headers pane (below this editor), in place of <token>:',
    `#      ${HEADERS_TEMPLATE}`,
    '#    Then the Docs (the book icon) list every type and field, with what it means.',
    '# 3. Run (the play button, or Ctrl-Enter).',
    '#',
    '# The latest jobs with their steps:',
    EXAMPLE_QUERY,
    '',
    '# Start a job (uncomment to try):',
    commentOut(EXAMPLE_MUTATION),
    '',
    '# Follow a job live over the websocket, first a snapshot, then every change (uncomment, put a jobId):',
    commentOut(EXAMPLE_SUBSCRIPTION),
    '',
  ].join('\n');
}

/** The `ruru` section of the preset. */
type RuruConfig = NonNullable<GraphileConfig.Preset['ruru']>;

export function ruruConfig(jwt: Pick<JwtSettings, 'secret' | 'jwksUrl'>): RuruConfig {
  return {
    // Ruru's type asks for every GraphiQL prop; the others keep Ruru's defaults.
    clientConfig: { defaultQuery: defaultQuery(jwt), defaultHeaders: HEADERS_TEMPLATE } as RuruConfig['clientConfig'],
    htmlParts: { titleTag: '<title>ballast GraphQL API (Ruru)</title>' },
  };
}
