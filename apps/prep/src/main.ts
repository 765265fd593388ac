console.log(JSON.stringify({argv: process.argv.slice(2), cwd: process.cwd(), init: process.env.INIT_CWD, env: Object.keys(process.env).filter(k=>/NX|CWD/.test(k)).map(k=>k+'='+process.env[k])}));
