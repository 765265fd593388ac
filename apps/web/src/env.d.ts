// Vite's asset imports (`?url`) in the web app.
declare module '*?url' {
  const url: string;
  export default url;
}
